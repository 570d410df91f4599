"""Build the run's objects from a validated config. Construction errors become ConfigError."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
from typing import cast

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from ..core.noise_design import design_noise
from ..data.base import train_split
from ..nets.precond import EDMPrecond, check_precond
from ..sampling import Sampler, dataset_mean
from ..training.guards import NonFiniteGuard
from ..training.score_model import EmaUpdate, ScoreModel
from .config import (
    GUARD_KEYS,
    MODEL_WRAPPER_KEYS,
    SAMPLER_SHARED,
    WRAPPER_KEYS,
    ConfigError,
    check_targets,
    validate_sigmas,
)
from .overrides import REQUESTED, user_set_keys
from .wandb_run import job_identity, resume_arguments

log = logging.getLogger(__name__)


@contextlib.contextmanager
def user_errors(what: str):
    """Turn the ValueError/TypeError of a constructor into a one-line ConfigError."""
    try:
        yield
    except ConfigError:
        raise
    except InstantiationException as e:
        raise ConfigError(_prefixed(what, e.__cause__ or e)) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(_prefixed(what, e)) from None


def _prefixed(what: str, error: BaseException) -> str:
    """The message, prefixed with ``what`` unless it already names a config key (``group.key=``)."""
    msg = str(error)
    names_a_key = re.match(r"[a-z_]+(\.[A-Za-z_]\w*)+=", msg) is not None
    return msg if msg.startswith(what.split(".")[0]) or names_a_key else f"{what}: {msg}"


def build_sigmas(cfg: DictConfig) -> torch.Tensor:
    with user_errors("sigmas"):
        return instantiate(cfg.sigmas)


def model_wrapper(model_cfg: DictConfig) -> dict:
    """``model.precond`` and ``model.sigma_data`` (read here, not by the net's target), checked by
    ``nets.precond.check_precond``: train.py's pre-flight (``config.validate_train``) calls this."""
    wrapper = {k: model_cfg[k] for k in MODEL_WRAPPER_KEYS if k in model_cfg}
    with user_errors("model"):
        check_precond(**wrapper)
    return wrapper


def build_net(model_cfg: DictConfig, sigmas: torch.Tensor):
    """The configured net; with ``model.precond=edm`` wrapped in EDM's preconditioning (a score still)."""
    wrapper = model_wrapper(model_cfg)
    with user_errors("model"):
        net = instantiate(target_node(model_cfg, MODEL_WRAPPER_KEYS), sigmas=sigmas)
        return EDMPrecond(net, wrapper.get("sigma_data", 0.5)) if wrapper.get("precond") == "edm" else net


def target_node(node: DictConfig, wrapper_keys) -> DictConfig | dict:
    """``node`` without the keys its ``_target_`` does not take (``config.WRAPPER_KEYS``)."""
    if not any(k in node for k in wrapper_keys):
        return node
    return {k: v for k, v in cast(dict, OmegaConf.to_container(node, resolve=True)).items() if k not in wrapper_keys}


def build_training(cfg: DictConfig) -> dict:
    """ScoreModel's pieces from ``loss.*`` and ``optim.*``: the loss, the optimizer partial, the
    training guard and the EMA decay. Each value is checked by the constructor that uses it (so
    the pre-flight check, ``config.validate_train``, calls this)."""
    with user_errors("loss"):
        loss = instantiate(target_node(cfg.loss, WRAPPER_KEYS["loss"]))
        guard = NonFiniteGuard(**{k: cfg.loss[k] for k in GUARD_KEYS if k in cfg.loss})
    with user_errors("optim"):
        optimizer = instantiate(target_node(cfg.optim, WRAPPER_KEYS["optim"]))
        ema_decay = cfg.optim.get("ema_decay")
        if ema_decay is not None:
            EmaUpdate(ema_decay)
    return {"loss": loss, "optimizer": optimizer, "guard": guard, "ema_decay": ema_decay}


def build_model(cfg: DictConfig, net, resolved: dict) -> ScoreModel:
    """The LightningModule: ``net`` with the pieces of ``build_training`` (the loss checks that it
    can train ``net``), ``speed.compile*``, and the resolved config saved in its checkpoints."""
    with user_errors("loss"):
        return ScoreModel(
            net,
            **build_training(cfg),
            compile_net=cfg.speed.compile,
            compile_mode=cfg.speed.compile_mode,
            config=resolved,
        )


def world_size(trainer_cfg: DictConfig) -> int:
    """The number of training processes the Trainer will start (devices per node x nodes), read
    from the config the way Lightning reads it, without building a Trainer: devices given as a
    count, a list of ids or a comma-separated string; 'auto' and -1 take every visible GPU (or 1
    process on the CPU). ``build_trainer`` checks the Trainer agrees."""
    devices, accelerator = trainer_cfg.devices, str(trainer_cfg.get("accelerator", "auto"))
    gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
    if devices in ("auto", -1, "-1"):
        per_node = gpus if gpus else (1 if devices == "auto" or accelerator != "cpu" else os.cpu_count() or 1)
    elif isinstance(devices, str):
        ids = [d for d in devices.split(",") if d.strip()]
        per_node = len(ids) if len(ids) > 1 or devices.strip().endswith(",") else int(ids[0])
    elif isinstance(devices, int):
        per_node = devices
    else:  # a list of device ids
        per_node = len(devices)
    return per_node * int(trainer_cfg.get("num_nodes", 1))


def build_datamodule(cfg: DictConfig, world_size: int):
    """The data module with the per-device batch size (data.batch_size is the global batch)."""
    if cfg.data.batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={cfg.data.batch_size} is invalid: must be divisible by the "
            f"number of processes ({world_size} = trainer.devices x trainer.num_nodes)"
        )
    with user_errors("data"):
        return instantiate(cfg.data, batch_size=cfg.data.batch_size // world_size)


def build_sampler(sampler_cfg: DictConfig) -> Sampler:
    """The ``sampler`` node (conf/sampler/<kind>.yaml) as a Sampler: the kind built by ``_target_``
    from its own keys, the shared keys (``SAMPLER_SHARED``) given to Sampler. ``kind`` names the
    file the node came from: a kind is changed with ``sampler=<kind>``, never ``sampler.kind``."""
    target = sampler_cfg.get("_target_")
    if not target or OmegaConf.is_missing(sampler_cfg, "_target_"):
        raise ConfigError("sampler: this node names no kind (_target_): choose one with sampler=<kind> (conf/sampler/)")
    check_targets(sampler_cfg, "sampler")  # a key of another kind is refused, never ignored
    node = cast(dict, OmegaConf.to_container(sampler_cfg, resolve=True))
    shared = {k: node.pop(k) for k in SAMPLER_SHARED if k in node}
    name = node.pop("kind", None)
    with user_errors("sampler"):
        kind = instantiate(node)
        if name != kind.name:
            raise ConfigError(
                f"sampler.kind={name!r} is invalid: it names the kind's file; choose the kind with "
                f"sampler={name} (not sampler.kind={name})"
            )
        return Sampler(kind, **shared)


def kind_settings(target: str) -> tuple:
    """The settings of the sampler kind class ``target`` (its constructor's arguments)."""
    return tuple(inspect.signature(get_class(target)).parameters)


def check_sampler_fits(sampler_cfg: DictConfig, net, sigmas: torch.Tensor) -> Sampler:
    """The sampler, its grid for this network's noise levels checked before any work by the same
    code every draw runs (``Sampler.grid``): e.g. sampler.num_steps on one level (L = 1)."""
    sampler = build_sampler(sampler_cfg)
    try:
        sampler.grid(sigmas, bool(getattr(net, "continuous", False)))
    except ValueError as e:
        levels = len(sigmas)
        raise ConfigError(f"{e} (with the network's {levels} noise level{'' if levels == 1 else 's'})") from None
    return sampler


def sampler_data_mean(sampler: Sampler, datamodule) -> torch.Tensor | None:
    """The training data's per-element mean, the centre of the sampler's Gaussian start
    (``init_mean='data'``), or None when the sampler does not use it. Computed once when a run
    is prepared (train.py) or loaded (sample.py) and passed to every draw."""
    return dataset_mean(train_split(datamodule)) if sampler.wants_data_mean else None


def check_net_matches_data(net, data_shape: tuple) -> None:
    """One forward pass on one example: the network must map the data's shape to itself."""
    x = torch.rand(1, *data_shape)
    try:
        with torch.no_grad():
            out = net(x, torch.zeros(1, dtype=torch.long))
    except RuntimeError as e:
        raise ConfigError(
            f"model does not fit data of shape {tuple(data_shape)} "
            f"(check model.in_channels and data.image_size): {str(e).splitlines()[0]}"
        ) from None
    if tuple(out.shape) != tuple(x.shape):
        raise ConfigError(
            f"model output shape {tuple(out.shape[1:])} differs from the data shape "
            f"{tuple(data_shape)} (check model.in_channels and data.image_size)"
        )


def apply_noise_design(cfg: DictConfig, datamodule) -> dict:
    """sigmas.kind=auto: NCSNv2's techniques from the training data, each only for what is left
    open: sigma_begin (technique 1) and num_scales (technique 2) where they are null, and
    sampler.step_lr (technique 4) with sigmas.set_step_lr unless the command line or the sweep
    sets sampler.step_lr. The values replace the auto node with a geometric one (so they are
    saved in the run's config and checkpoints), and the auto node as composed is kept under
    ``requested.sigmas`` (``overrides.REQUESTED``); the design itself is returned (for results.json)."""
    auto = cfg.sigmas
    if hasattr(datamodule, "prepare_data"):
        datamodule.prepare_data()
    datamodule.setup("fit")
    given = {k for k in ("sigma_begin", "num_scales") if auto.get(k) is not None}
    try:
        design = design_noise(
            datamodule.train_set,
            auto.sigma_end,
            auto.overlap,
            cfg.sampler.get("n_steps_each", 5),  # technique 4 is annealed Langevin's; other kinds: reported only
            auto.sample_size,
            cfg.seed,
            sigma_begin=auto.get("sigma_begin"),
            num_scales=auto.get("num_scales"),
        )
    except ValueError as e:
        raise ConfigError(f"sigmas.kind=auto: {e}") from None
    if not auto.set_step_lr:
        step_lr_note = "not applied: sigmas.set_step_lr=false"
    elif "n_steps_each" not in cfg.sampler:
        step_lr_note = f"not applied: sampler={cfg.sampler.kind} has no step_lr"
    elif "sampler.step_lr" in user_set_keys():
        step_lr_note = f"not applied: sampler.step_lr={cfg.sampler.step_lr} given"
    elif design["step_lr"] is None:
        step_lr_note = "not applied: one level has no ratio gamma for technique 4"
    else:
        step_lr_note = "technique 4"
    requested = OmegaConf.to_container(auto, resolve=True)
    with open_dict(cfg):
        cfg[REQUESTED] = {**(cfg.get(REQUESTED) or {}), "sigmas": requested}  # the node as composed
        cfg.sigmas = {
            "_target_": "ncsn.core.sigmas.make_sigmas",
            "kind": "geometric",
            "sigma_begin": float(design["sigma_begin"]),
            "sigma_end": float(auto.sigma_end),
            "num_scales": int(design["num_scales"]),
        }
        if step_lr_note == "technique 4":
            cfg.sampler.step_lr = float(design["step_lr"])
    source = {
        k: "given" if k in given else f"technique {1 if k == 'sigma_begin' else 2}"
        for k in ("sigma_begin", "num_scales")
    }
    log.info(
        "sigmas.kind=auto: sigma_begin=%.4g (%s) sigma_end=%.4g num_scales=%d (%s) gamma=%s overlap=%s step_lr=%s (%s)",
        design["sigma_begin"],
        source["sigma_begin"],
        design["sigma_end"],
        design["num_scales"],
        source["num_scales"],
        "-" if design["gamma"] is None else f"{design['gamma']:.5f}",
        "-" if design["overlap"] is None else f"{design['overlap']:.3g}",
        "-" if design["step_lr"] is None else f"{design['step_lr']:.3g}",
        step_lr_note,
    )
    validate_sigmas(cfg)
    return {k: float(v) for k, v in design.items() if v is not None}


def build_loggers(cfg: DictConfig, group: str | None, name: str | None) -> list:
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        extra = {}
        if key == "wandb":
            auto_tags = job_identity().get("tags", [])
            tags = [*auto_tags, *(t for t in (node.tags or []) if t not in auto_tags)]
            extra = {"group": node.group or group, "name": node.name or name, "tags": tags, **resume_arguments(node)}
        with user_errors(f"logger.{key}"):
            loggers.append(instantiate(node, **extra))
    return loggers
