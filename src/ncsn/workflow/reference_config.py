"""The reference implementations' files as this repository reads them: an official checkpoint
(``ncsn.nets.reference`` reads the layouts) and the reference's ``.yml`` config, turned into the
values of this repository's config keys and a full, validated training config (the matching
paper experiment plus every value the .yml sets)."""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from ..core.checks import is_int, is_number
from ..nets.reference import ReferenceFormatError, ReferenceStates, read_states
from .checkpoints import load_weights_only
from .config import CONF_DIR, ConfigError, validate_train

REFERENCES = ("ncsn", "ncsnv2")
LAYOUTS = {"ncsn": "[model, optimizer]", "ncsnv2": "[model, optimizer, epoch, step(, ema)]"}

#: (reference family, data.dataset of the .yml) -> this repository's paper experiment
EXPERIMENTS = {
    ("ncsn", "MNIST"): "ncsn_mnist",
    ("ncsn", "CIFAR10"): "ncsn_cifar10",
    ("ncsn", "CELEBA"): "ncsn_celeba",
    ("ncsnv2", "CIFAR10"): "ncsnv2_cifar10",
    ("ncsnv2", "CELEBA"): "ncsnv2_celeba",
}
#: why the other released setups cannot be converted (yet)
UNSUPPORTED = {
    "LSUN": "this repository has no LSUN data module (the network, NCSNv2Deeper, is mapped)",
    "FFHQ": "the reference's FFHQ network (NCSNv2Deepest) and an FFHQ data module are not in this repository",
    "SVHN": "this repository has no SVHN data module",
}
#: the sampler of NCSN's released code (runners/anneal_runner.py, test()): not in its .yml
NCSN_SAMPLER = {"n_steps_each": 100, "step_lr": 2e-5, "denoise": False}
#: our data module class -> the reference's data.dataset
DATASETS = {"Cifar10DataModule": "CIFAR10", "CelebaDataModule": "CELEBA", "MnistDataModule": "MNIST"}


# -- reading the reference's files ---------------------------------------------------------------
def load_reference_file(path: str | Path, key: str = "ckpt_path") -> ReferenceStates:
    """torch.load (weights-only) a reference checkpoint and recognize its layout; one-line errors."""
    path = Path(path)
    obj = load_weights_only(path, key)
    try:
        return read_states(obj)
    except ReferenceFormatError as e:
        raise ConfigError(f"{key}={str(path)!r}: {e}") from None


class _ReferenceYamlLoader(yaml.SafeLoader):
    """Safe YAML, plus the ``!!python/object:argparse.Namespace`` mappings of the ``config.yml``
    that NCSNv2's main.py dumps next to its checkpoints (read as plain mappings, nothing run)."""


def _namespace_as_mapping(loader, suffix, node):
    if suffix != "argparse.Namespace":
        raise yaml.constructor.ConstructorError(None, None, f"python object {suffix!r} is not allowed", node.start_mark)
    return loader.construct_mapping(node, deep=True)


_ReferenceYamlLoader.add_multi_constructor("tag:yaml.org,2002:python/object:", _namespace_as_mapping)


def read_reference_config(path: str | Path, key: str = "reference_config") -> dict:
    """The reference's .yml as a plain dict (``configs/*.yml`` of either repository, or the
    ``config.yml`` saved in NCSNv2's log folder)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{key}={str(path)!r}: no such file")
    try:
        cfg = yaml.load(path.read_text(), Loader=_ReferenceYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{key}={str(path)!r}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict) or not isinstance(cfg.get("model"), dict):
        raise ConfigError(
            f"{key}={str(path)!r}: not a config of the reference code (needs 'data' and 'model' sections)"
        )
    return cfg


def _value(ycfg: dict, dotted: str, ok, allowed: str, default=None, required: bool = True):
    node = ycfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if required:
                raise ConfigError(f"reference_config: {dotted} is missing (must be {allowed})")
            return default
        node = node[part]
    if not ok(node):
        raise ConfigError(f"reference_config: {dotted}={node!r} is invalid: must be {allowed}")
    return node


def _is_bool(v) -> bool:
    return isinstance(v, bool)


def _positive(v) -> bool:
    return is_number(v) and v > 0


def reference_values(family: str, ycfg: dict) -> tuple[str, dict, list[str]]:
    """(experiment, {our dotted key: value}, notes) read from the reference's .yml."""
    dataset = _value(ycfg, "data.dataset", lambda v: isinstance(v, str), "a dataset name")
    if (family, dataset) not in EXPERIMENTS:
        why = UNSUPPORTED.get(dataset, f"the reference's {family} code has no {dataset!r} setup")
        supported = ", ".join(d for f, d in EXPERIMENTS if f == family)
        raise ConfigError(
            f"reference_config: data.dataset={dataset!r} cannot be converted: {why} (supported: {supported})"
        )
    notes = []
    if _value(ycfg, "data.logit_transform", _is_bool, "true or false", False, required=False):
        raise ConfigError(
            "reference_config: data.logit_transform=true is not supported (this repository's networks take 2x - 1)"
        )
    if _value(ycfg, "data.rescaled", _is_bool, "true or false", False, required=False):
        raise ConfigError(
            "reference_config: data.rescaled=true is not supported (this repository's networks take 2x - 1)"
        )
    values = {
        "model.ngf": _value(ycfg, "model.ngf", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "data.image_size": _value(ycfg, "data.image_size", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "sigmas.sigma_begin": float(_value(ycfg, "model.sigma_begin", _positive, "a number > 0")),
        "sigmas.sigma_end": float(_value(ycfg, "model.sigma_end", _positive, "a number > 0")),
        "sigmas.num_scales": _value(ycfg, "model.num_classes", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "data.random_flip": _value(ycfg, "data.random_flip", _is_bool, "true or false", False, required=False),
        "data.batch_size": _value(
            ycfg, "training.batch_size", lambda v: is_int(v) and v >= 1, "an integer", 128, False
        ),
        "loss.anneal_power": float(_value(ycfg, "training.anneal_power", is_number, "a number", 2.0, False)),
        "optim.lr": float(_value(ycfg, "optim.lr", _positive, "a number > 0", 1e-3, False)),
        "optim.beta1": float(_value(ycfg, "optim.beta1", is_number, "a number", 0.9, False)),
        "optim.weight_decay": float(_value(ycfg, "optim.weight_decay", is_number, "a number", 0.0, False)),
        "optim.amsgrad": _value(ycfg, "optim.amsgrad", _is_bool, "true or false", False, False),
    }
    channels = _value(ycfg, "data.channels", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    if _value(ycfg, "optim.optimizer", lambda v: isinstance(v, str), "a name", "Adam", False) != "Adam":
        notes.append("optim.optimizer is not Adam (only matters for training)")
    if family == "ncsn":
        values["sigmas.kind"] = "geometric"  # NCSN's code has only geometric levels
        values["data.dequantize"] = True  # its training loop always dequantizes uniformly
        values["optim.ema_decay"] = None
        values.update({f"sampler.{k}": v for k, v in NCSN_SAMPLER.items()})
    else:
        dist = _value(ycfg, "model.sigma_dist", lambda v: v in ("geometric", "uniform"), "geometric or uniform")
        values["sigmas.kind"] = "geometric" if dist == "geometric" else "linear"
        for key, want in (("model.normalization", "InstanceNorm++"), ("model.nonlinearity", "elu")):
            got = _value(ycfg, key, lambda v: isinstance(v, str), "a name")
            if got.lower() != want.lower():
                raise ConfigError(
                    f"reference_config: {key}={got!r} is not supported (this repository's NCSNv2 uses {want})"
                )
        if _value(ycfg, "model.spec_norm", _is_bool, "true or false", False, False):
            raise ConfigError("reference_config: model.spec_norm=true is not supported (no spectral norm here)")
        values["data.dequantize"] = _value(ycfg, "data.uniform_dequantization", _is_bool, "true or false", False, False)
        if _value(ycfg, "data.gaussian_dequantization", _is_bool, "true or false", False, False):
            notes.append("data.gaussian_dequantization=true has no counterpart (only matters for training)")
        values["optim.eps"] = float(_value(ycfg, "optim.eps", _positive, "a number > 0", 1e-8, False))
        ema = _value(ycfg, "model.ema", _is_bool, "true or false", False, False)
        rate = float(
            _value(ycfg, "model.ema_rate", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)", 0.999, False)
        )
        values["optim.ema_decay"] = rate if ema else None
        values["sampler.step_lr"] = float(_value(ycfg, "sampling.step_lr", _positive, "a number > 0"))
        values["sampler.n_steps_each"] = _value(
            ycfg, "sampling.n_steps_each", lambda v: is_int(v) and v >= 1, "an integer >= 1"
        )
        values["sampler.denoise"] = _value(ycfg, "sampling.denoise", _is_bool, "true or false")
        if _value(ycfg, "sampling.data_init", _is_bool, "true or false", False, False):
            notes.append("sampling.data_init=true (start from noisy data) is not used: samples start from U[0, 1]")
    return EXPERIMENTS[(family, dataset)], values | {"_channels": channels}, notes


# -- composing this repository's training config ------------------------------------------------
def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def compose_train_config(experiment: str, values: dict, overrides=(), paths: dict | None = None) -> DictConfig:
    """conf/train.yaml with ``experiment``, then ``values`` (except keys set in ``overrides``, which
    win), then ``paths``; resolved and validated like train.py's."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [str(o) for o in overrides]
    args = [f"experiment={experiment}", *overrides]
    try:
        if GlobalHydra.instance().is_initialized():  # inside sample.py's Hydra app: same conf/ search path
            cfg = compose(config_name="train", overrides=args)
        else:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="train", overrides=args)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"reference_overrides={overrides}: {str(e).splitlines()[0]}") from None
    user = {_override_key(o) for o in overrides}
    for key, value in values.items():
        if key.startswith("_") or key in user:
            continue
        if OmegaConf.select(cfg, key, default="<absent>") == "<absent>":
            if key.startswith(("optim.", "loss.", "data.batch_size")):
                continue  # training-only settings this version of the config does not have
            raise ConfigError(f"the training config has no key {key} to take the reference's value")
        OmegaConf.update(cfg, key, value, merge=False)
    for key, value in (paths or {}).items():
        if f"paths.{key}" not in user:
            OmegaConf.update(cfg, f"paths.{key}", value, merge=False)
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    assert isinstance(resolved, DictConfig)
    validate_train(resolved)
    channels = values.get("_channels")
    if channels is not None and resolved.data.get("channels") != channels:
        raise ConfigError(
            f"reference_config: data.channels={channels} does not match the data of experiment "
            f"{experiment} ({resolved.data.get('channels')})"
        )
    return resolved
