"""Validation of a composed config, before any work starts, and the run directory's record.

Every failure raises ``ConfigError`` with a one-line message naming the key (or path), the value
and what is allowed; the entry points print it and exit with status 2.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..core.checks import flatten, is_int, is_number
from ..core.sigmas import check_sigmas
from ..sampling import Sampler

log = logging.getLogger(__name__)

#: Keys that may differ when a run directory is resumed (training longer is the same run).
RESUME_IGNORED_KEYS = ("ckpt_path", "allow_config_change", "trainer.max_steps", "trainer.max_epochs")
HYDRA_SPECIAL = {"_target_", "_recursive_", "_convert_", "_partial_", "_args_"}
#: keys of the model node read by ``build.build_net`` (a wrapper around the net), not by its target
MODEL_WRAPPER_KEYS = ("precond", "sigma_data")
#: keys of the loss node read by ``build.build_training`` for the training guard, not by the loss
GUARD_KEYS = ("on_nonfinite", "max_skipped", "explode_factor")
#: keys of a ``_target_`` node that its target does not take (``build`` hands them to another object)
#: keys of the sampler node given to ``Sampler`` (the settings every kind shares), not to its kind
SAMPLER_SHARED = tuple(inspect.signature(Sampler).parameters)[1:]
WRAPPER_KEYS = {
    "model": MODEL_WRAPPER_KEYS,
    "loss": GUARD_KEYS,
    "optim": ("ema_decay",),
    "sampler": ("kind", *SAMPLER_SHARED),
}
#: the ``_target_`` of nodes that had none in configs saved before they became objects (``upgrade_saved``)
ADDED_TARGETS = {"loss": "ncsn.core.losses.DSMLoss", "optim": "ncsn.training.optimizer.Adam"}
PRECISIONS = ("64-true", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "transformer-engine")


class ConfigError(ValueError):
    """A bad config value, path or checkpoint; the message is meant for the user as it is."""


def _get(cfg, key):
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def need(cfg, key: str, ok, allowed: str) -> None:
    value = _get(cfg, key)
    try:
        good = ok(value)
    except TypeError:
        good = False
    if not good:
        raise ConfigError(f"{key}={value!r} is invalid: must be {allowed}")


def check_targets(cfg: DictConfig | ListConfig, prefix: str = "") -> None:
    """Every ``_target_`` node: the target imports and each key is one of its arguments."""
    if isinstance(cfg, ListConfig):
        for i, item in enumerate(cfg):
            if isinstance(item, (DictConfig, ListConfig)):
                check_targets(item, f"{prefix}[{i}]")
        return
    if "_target_" in cfg:
        target = cfg["_target_"]
        module, _, name = str(target).rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            raise ConfigError(f"{prefix}._target_={target!r} cannot be imported") from None
        params = inspect.signature(obj).parameters
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            wrapper = WRAPPER_KEYS.get(prefix, ())
            unknown = [str(k) for k in cfg.keys() if k not in HYDRA_SPECIAL and k not in params and k not in wrapper]
            if unknown:
                allowed = ", ".join(k for k in params if k not in ("self",))
                raise ConfigError(f"{prefix}.{unknown[0]} is not a key of {target} (allowed: {allowed})")
    for key in cfg.keys():
        child = cfg._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_none() and key != "hydra":
            check_targets(child, f"{prefix}.{key!s}" if prefix else str(key))


SEED_MAX = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything feeds
#: conf/ beside the package (a source checkout; absent from an installed copy)
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"


def known_top_level_keys(config_name: str) -> set[str] | None:
    """The top-level keys of conf/<config_name> and of the groups in its defaults list (None when
    conf/ is not beside the package, e.g. an installed copy: then the check is skipped)."""
    path = CONF_DIR / config_name
    if not path.is_file():
        return None
    main = cast(DictConfig, OmegaConf.load(path))  # a mapping: train.yaml or sample.yaml
    keys = {str(k) for k in main.keys() if k != "defaults"}
    for entry in main.get("defaults") or []:
        name = str(next(iter(entry))) if isinstance(entry, DictConfig) else str(entry)
        keys.add(name.split()[-1].strip("/").split("@")[0])
    return keys - {"_self_"}


def check_top_level_keys(cfg: DictConfig, config_name: str) -> None:
    """A new top-level key (``+seeed=3``, ``+model=...`` for sample.py) is refused: Hydra adds
    it, nothing reads it."""
    known = known_top_level_keys(config_name)
    if known is None:
        return
    unknown = sorted(str(k) for k in cfg.keys() if k not in known)
    if unknown:
        raise ConfigError(
            f"{unknown[0]} is not a key of {config_name} (a typo, or a group it does not use; "
            f"its top-level keys: {', '.join(sorted(known))})"
        )


def validate_train(cfg: DictConfig) -> None:
    """train.py's checks before any work. A value that an object takes is checked by that object's
    constructor, called here on the config (loss, optimizer, guard, EMA: ``build.build_training``;
    the preconditioning: ``build.model_wrapper``; the noise levels: ``core.sigmas.check_sigmas``);
    the rest is caught by building."""
    check_top_level_keys(cfg, "train.yaml")
    need(cfg, "seed", lambda v: is_int(v) and 0 <= v <= SEED_MAX, f"an integer in [0, {SEED_MAX}]")
    need(cfg, "torch_threads", lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1")
    need(cfg, "allow_config_change", lambda v: isinstance(v, bool), "true or false")
    need(cfg, "ckpt_path", lambda v: v is None or isinstance(v, str), "null, 'last' or a path")
    validate_sigmas(cfg)
    need(cfg, "speed.channels_last", lambda v: isinstance(v, bool), "true or false")
    need(cfg, "speed.compile", lambda v: isinstance(v, bool), "true or false")
    need(
        cfg,
        "speed.compile_mode",
        lambda v: v in (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        "null, default, reduce-overhead, max-autotune or max-autotune-no-cudagraphs",
    )
    need(cfg, "data.batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    if "num_workers" in cfg.data:
        need(cfg, "data.num_workers", lambda v: is_int(v) and v >= 0, "an integer >= 0")
    need(cfg, "trainer.max_steps", lambda v: is_int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1")
    need(
        cfg,
        "trainer.max_epochs",
        lambda v: v is None or (is_int(v) and (v >= 1 or v == -1)),
        "null, -1 or an integer >= 1",
    )
    need(cfg, "trainer.precision", lambda v: str(v) in PRECISIONS, f"one of {PRECISIONS}")
    accelerator = str(_get(cfg, "trainer.accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not _cuda_available())
    if on_cpu and str(cfg.trainer.precision) in ("16-mixed", "16-true", "transformer-engine"):
        raise ConfigError(
            f"trainer.precision={cfg.trainer.precision!r} is invalid on the CPU (Lightning would run "
            "bf16 instead): use 32-true, or bf16-mixed where the CPU has bf16 (avx512_bf16)"
        )
    need(cfg, "trainer.gradient_clip_val", lambda v: v is None or (is_number(v) and v > 0), "null or a number > 0")
    need(cfg, "trainer.accumulate_grad_batches", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    need(
        cfg, "trainer.check_val_every_n_epoch", lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1"
    )
    need(
        cfg,
        "trainer.devices",
        lambda v: v == "auto" or (is_int(v) and (v >= 1 or v == -1)) or isinstance(v, ListConfig),
        "'auto', -1, an integer >= 1 or a list of device ids",
    )
    need(cfg, "trainer.num_nodes", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    for key in ("every_n_train_steps", "every_n_epochs"):
        if _get(cfg, f"callbacks.checkpoint.{key}") is not None:
            need(cfg, f"callbacks.checkpoint.{key}", lambda v: is_int(v) and v >= 1, "null or an integer >= 1")
    fid_on = (_get(cfg, "fid.backend") or "none") != "none"
    if fid_on:
        need(cfg, "fid.batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    callbacks: Any = cfg.get("callbacks") or {}
    if callbacks.get("best") is not None and callbacks.best.get("monitor") in ("fid", "fid/denoised", "fid/no_denoise"):
        if not fid_on or callbacks.get("samples") is None:
            raise ConfigError(
                f"callbacks.best.monitor={callbacks.best.monitor!r} needs FID: set fid=classifier or "
                "fid=inception (and keep callbacks.samples), or callbacks.best=null"
            )
    if callbacks.get("samples") is not None:  # the rule SampleCallback.setup applies, checked before any work
        from ..training.callbacks import samples_interval_error

        error = samples_interval_error(callbacks.samples.every_n_epochs, _get(cfg, "trainer.check_val_every_n_epoch"))
        if error:
            raise ConfigError(error)
    check_targets(cfg)
    from .build import build_training, model_wrapper

    model_wrapper(cfg.model)  # model.precond, model.sigma_data: the rule of nets.precond
    build_training(cfg)  # loss.* and optim.*: checked by the constructors that use them


def validate_sample(cfg: DictConfig) -> None:
    """sample.py's own keys (the sampler's are checked when it is built)."""
    check_top_level_keys(cfg, "sample.yaml")
    out_dir = _get(cfg, "out_dir")
    if out_dir is not None and Path(str(out_dir)).exists() and not Path(str(out_dir)).is_dir():
        raise ConfigError(f"out_dir={str(out_dir)!r} is invalid: it is an existing file, not a directory")
    if _get(cfg, "mode") != "rescore":  # rescore: the checkpoints of rescore.sweep_dir's jobs
        need(cfg, "ckpt_path", lambda v: isinstance(v, str) and v, "a path to a checkpoint")
    need(cfg, "seed", lambda v: is_int(v) and 0 <= v <= SEED_MAX, f"an integer in [0, {SEED_MAX}]")
    need(
        cfg,
        "device",
        lambda v: isinstance(v, str) and (v in ("auto", "cpu", "cuda") or v.startswith("cuda:")),
        "auto, cpu, cuda or cuda:N",
    )
    need(cfg, "torch_threads", lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1")
    need(cfg, "nnpack", lambda v: isinstance(v, bool), "true or false")
    modes = ("samples", "fid", "inpaint", "interpolate", "progression", "toy_figure", "score_error", "nll", "rescore")
    need(cfg, "mode", lambda v: v in modes, f"one of {modes}")
    need(cfg, "nll.n_images", lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1")
    need(cfg, "nll.batch_size", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    need(cfg, "nll.num_steps", lambda v: is_int(v) and v >= 2, "an integer >= 2")
    need(cfg, "nll.rho", lambda v: is_number(v) and v > 0, "a number > 0")
    need(cfg, "nll.estimator", lambda v: v in ("hutchinson", "exact"), "'hutchinson' or 'exact'")
    need(cfg, "score_error.n_images", lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1")
    need(cfg, "score_error.n_noise", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    need(cfg, "score_error.num_sigmas", lambda v: v is None or (is_int(v) and v >= 2), "null or an integer >= 2")
    need(cfg, "eval.n_samples", lambda v: is_int(v) and v >= 2, "an integer >= 2")
    need(cfg, "inpaint.n_images", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    need(cfg, "inpaint.n_per_image", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    need(cfg, "inpaint.renoise", lambda v: v in ("level", "step"), "'level' or 'step'")
    need(cfg, "inpaint.box_size", lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)")
    need(cfg, "inpaint.fraction", lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)")
    need(cfg, "interpolate.n_rows", lambda v: is_int(v) and v >= 1, "an integer >= 1")
    need(cfg, "interpolate.n_interp", lambda v: is_int(v) and v >= 2, "an integer >= 2")
    need(cfg, "progression.n_show", lambda v: is_int(v) and v >= 1, "an integer >= 1")


def validate_sigmas(cfg: DictConfig) -> None:
    if _get(cfg, "sigmas.kind") == "auto":  # sigma_begin and num_scales: null = computed from the data
        need(cfg, "sigmas.sigma_end", lambda v: is_number(v) and v > 0, "a number > 0")
        sigma_end = cfg.sigmas.sigma_end
        need(cfg, "sigmas.num_scales", lambda v: v is None or (is_int(v) and v >= 1), "null or an integer >= 1")
        ok_begin = lambda v: v is None or (is_number(v) and v > sigma_end)  # noqa: E731
        need(cfg, "sigmas.sigma_begin", ok_begin, f"null or a number > sigmas.sigma_end={sigma_end}")
        need(cfg, "sigmas.overlap", lambda v: is_number(v) and 0 < v < 0.997, "a number in (0, 0.997)")
        need(cfg, "sigmas.sample_size", lambda v: v is None or (is_int(v) and v >= 2), "null or an integer >= 2")
        need(cfg, "sigmas.set_step_lr", lambda v: isinstance(v, bool), "true or false")
        return
    try:  # make_sigmas's own check, without computing the levels (their number is checked for size later)
        check_sigmas(*(_get(cfg, f"sigmas.{k}") for k in ("kind", "sigma_begin", "sigma_end", "num_scales")))
    except ValueError as e:
        raise ConfigError(str(e)) from None


# -- the run directory's record -----------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _is_path_key(key: str, a, b, old_run_dir, new_run_dir) -> bool:
    """Where things are, not what runs: ``paths.*``, and values under the run directory
    (checkpoint dirpath, logger save_dir, samples out_dir) that differ only by where the run
    directory is: a moved run directory is the same run."""
    if key.startswith("paths."):
        return True
    if not (isinstance(a, str) and isinstance(b, str) and old_run_dir and new_run_dir):
        return False
    old_run_dir, new_run_dir = str(old_run_dir), str(new_run_dir)
    return a.startswith(old_run_dir) and b.startswith(new_run_dir) and a[len(old_run_dir) :] == b[len(new_run_dir) :]


def upgrade_saved(config: dict) -> dict:
    """A saved config in today's layout: the nodes that became objects (``ADDED_TARGETS``) get the
    ``_target_`` they were saved without (a copy; ``config`` is not changed)."""
    upgraded = dict(config)
    for key, target in ADDED_TARGETS.items():
        node = config.get(key)
        if isinstance(node, dict) and "_target_" not in node:
            upgraded[key] = {"_target_": target, **node}
    return upgraded


def added_defaults(old: dict, new: dict, overrides: list[str]) -> list[str]:
    """Keys the saved config ``old`` lacks (added to the repository since the run started) that
    no override sets: at their defaults, they do not change what the run is."""
    a, b = flatten(upgrade_saved(old)), flatten(new)
    set_keys = [o.partition("=")[0].lstrip("+~") for o in overrides]
    return [k for k in sorted(set(b) - set(a)) if not any(k == s or k.startswith(f"{s}.") for s in set_keys)]


def config_differences(old: dict, new: dict, overrides: list[str] | None = None) -> list[str]:
    """Keys whose values differ, except RESUME_IGNORED_KEYS, path-valued keys (_is_path_key) and,
    given the run's ``overrides``, keys added at their defaults (``added_defaults``)."""
    old = upgrade_saved(old)
    a, b = flatten(old), flatten(new)
    old_dir, new_dir = a.get("paths.run_dir"), b.get("paths.run_dir")
    added = set(added_defaults(old, new, overrides)) if overrides is not None else set()
    keys = sorted(set(a) | set(b))
    return [
        k
        for k in keys
        if k not in RESUME_IGNORED_KEYS
        and k not in added
        and a.get(k, "<absent>") != b.get(k, "<absent>")
        and not _is_path_key(k, a.get(k), b.get(k), old_dir, new_dir)
    ]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def record_run_config(run_dir: Path, resolved: dict, overrides: list[str], allow_change: bool) -> bool:
    """Write run_dir/.hydra/config.yaml (and overrides.yaml). If the directory already holds a
    config, it must match (else ConfigError, unless ``allow_change``). Returns True when a config
    was already there (a resumed run)."""
    path = run_dir / ".hydra" / "config.yaml"
    existed = path.exists()
    if existed:
        try:
            old = cast(dict, OmegaConf.to_container(OmegaConf.load(path), resolve=False))
        except Exception as e:  # noqa: BLE001 - any parse failure is reported the same way
            raise ConfigError(f"{path}: the run directory's saved config cannot be read ({e})") from None
        diff = config_differences(old, resolved, overrides)
        if added := added_defaults(old, resolved, overrides):
            log.info("config: keys added since this run started, at their defaults: %s", ", ".join(added))
        if diff and not allow_change:
            shown = ", ".join(
                f"{k}: {flatten(old).get(k, '<absent>')!r} -> {flatten(resolved).get(k, '<absent>')!r}"
                for k in diff[:5]
            )
            raise ConfigError(
                f"run directory {run_dir} already holds a different config ({shown}"
                f"{', ...' if len(diff) > 5 else ''}); use a new run directory, "
                "or allow_config_change=true to continue it anyway"
            )
        if diff:
            backup = path.with_name(f"config.before-{len(list(path.parent.glob('config.before-*'))) + 1}.yaml")
            os.replace(path, backup)
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(resolved)))
    atomic_write_text(run_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    write_hydra_record(run_dir)
    return existed


def write_hydra_record(run_dir: Path) -> None:
    """run_dir/.hydra/hydra.yaml: Hydra's own config of this job (the chosen config-group options
    under ``hydra.runtime.choices``, the overrides, the sweep), as Hydra would write it (unresolved).
    Written by ncsn with config.yaml, after validation (``hydra.output_subdir`` is null)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    record = {"hydra": OmegaConf.to_container(HydraConfig.get(), resolve=False)}
    atomic_write_text(run_dir / ".hydra" / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create(record)))
