"""The authors' released NCSN / NCSNv2 checkpoints as checkpoints of this repository, and back.

``reference_to_checkpoint``: a reference ``checkpoint*.pth`` and the reference's ``.yml`` config
-> the dict a ``train.py`` checkpoint holds (``state_dict`` with ``net.*`` and, when the file has
an EMA shadow, ``ema.module.*``; ``hyper_parameters.config`` = a full training config of this
repository composed from the matching paper experiment plus every value the .yml sets). sample.py
calls it in memory (``reference=``); ``python -m ncsn.workflow.convert`` writes it to a file.

``checkpoint_to_reference``: the other way, a list the original code ``torch.load``s plus its .yml.

The parameter names are mapped by ``ncsn.nets.reference`` (documented there, table included); the
reference's files are read by ``reference_config``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from ..nets.reference import (
    ReferenceFormatError,
    ReferenceStates,
    family_of,
    fresh_adam_state,
    to_ours,
    to_reference,
    write_states,
)
from .build import build_net, build_sigmas
from .config import ConfigError, validate_sigmas
from .reference_config import (
    DATASETS,
    LAYOUTS,
    REFERENCES,
    compose_train_config,
    load_reference_file,
    read_reference_config,
    reference_values,
)


# -- reference -> ours --------------------------------------------------------------------------
def reference_to_checkpoint(
    ckpt_path: str | Path,
    config_path: str | Path,
    reference: str | None = None,
    overrides=(),
    paths: dict | None = None,
) -> dict:
    """A reference checkpoint + its .yml -> a checkpoint dict of this repository (in memory).

    ``reference``: "ncsn" or "ncsnv2" to insist on the file's family (None: recognized from the
    layout). ``overrides``: Hydra overrides of the composed training config (they win over the
    .yml). ``paths``: values for ``paths.*`` (data_dir, cache_dir, run_dir).
    """
    if reference is not None and reference not in REFERENCES:
        raise ConfigError(f"reference={reference!r} is invalid: must be null, 'ncsn' or 'ncsnv2'")
    states = load_reference_file(ckpt_path)
    if reference is not None and reference != states.family:
        raise ConfigError(
            f"ckpt_path={str(ckpt_path)!r}: reference={reference!r} but the file has the layout of "
            f"{states.family} ({LAYOUTS[states.family]})"
        )
    ycfg = read_reference_config(config_path)
    if (states.family == "ncsnv2") != ("sampling" in ycfg):
        which = ("an NCSN config (no 'sampling' section)", "an NCSNv2 config (with a 'sampling' section)")
        raise ConfigError(
            f"reference_config={str(config_path)!r}: {which[states.family == 'ncsn']} "
            f"for an {states.family.upper().replace('NCSNV2', 'NCSNv2')} checkpoint"
        )
    experiment, values, notes = reference_values(states.family, ycfg)
    run_paths = {"run_dir": str(Path(ckpt_path).resolve().parent)} | dict(paths or {})
    train_cfg = compose_train_config(experiment, values, overrides, run_paths)
    validate_sigmas(train_cfg)
    sigmas = build_sigmas(train_cfg)
    net = build_net(train_cfg.model, sigmas)
    try:
        if family_of(net) != states.family:
            raise ReferenceFormatError(f"model {type(net).__name__} is not of the reference's {states.family} family")
        model = to_ours(states.model, net, sigmas=sigmas)
        if states.family == "ncsnv2" and not torch.allclose(model["sigmas"], net.sigmas, rtol=1e-5, atol=0):
            raise ReferenceFormatError(
                f"its noise levels ({len(model['sigmas'])} from {float(model['sigmas'][0]):.6g} to "
                f"{float(model['sigmas'][-1]):.6g}) differ from reference_config's"
            )
        ema = None
        if states.ema is not None:
            ema = to_ours(states.ema, net, parameters_only=True, sigmas=model["sigmas"])
    except ReferenceFormatError as e:
        raise ConfigError(f"ckpt_path={str(ckpt_path)!r}: {e}") from None
    config: Any = OmegaConf.to_container(train_cfg, resolve=True)
    if ema is None and config["optim"].get("ema_decay") is not None:
        notes.append("reference_config sets model.ema=true but the file holds no EMA shadow: raw weights used")
        config["optim"]["ema_decay"] = None
    if ema is not None and config["optim"].get("ema_decay") is None:
        config["optim"]["ema_decay"] = 0.999
        notes.append("the file holds an EMA shadow although reference_config sets model.ema=false: EMA weights used")
    state_dict = {f"net.{k}": v for k, v in model.items()}
    if ema is not None:
        state_dict.update({f"ema.module.{k}": v for k, v in ema.items()})
        state_dict["ema.n_averaged"] = torch.tensor(int(states.step or 0), dtype=torch.long)
    state_dict["skipped_batches"] = torch.zeros((), dtype=torch.long)
    return {
        "state_dict": state_dict,
        "hyper_parameters": {"config": config},
        "epoch": int(states.epoch or 0),
        "global_step": int(states.step or 0),
        "reference": {
            "family": states.family,
            "source": str(ckpt_path),
            "config_file": str(config_path),
            "config": ycfg,
            "epoch": states.epoch,
            "step": states.step,
            "ema": ema is not None,
            "notes": notes,
        },
    }


def describe(ckpt: dict) -> str:
    """One line: what a converted checkpoint holds."""
    cfg, ref = ckpt["hyper_parameters"]["config"], ckpt.get("reference", {})
    n = sum(v.numel() for k, v in ckpt["state_dict"].items() if k.startswith("net.") and k != "net.sigmas")
    target = cfg["model"]["_target_"].rsplit(".", 1)[-1]
    step = f", step {ref['step']}" if ref.get("step") is not None else ""
    weights = "EMA weights" if ref.get("ema") else "raw weights (no EMA in the file)"
    return (
        f"{target} ngf {cfg['model']['ngf']} ({n:,} parameters), L={cfg['sigmas']['num_scales']} "
        f"sigmas {cfg['sigmas']['sigma_begin']:g}..{cfg['sigmas']['sigma_end']:g}, "
        f"{cfg['data']['image_size']} px, {weights}{step}"
    )


# -- ours -> reference --------------------------------------------------------------------------
def _reference_sigma_dist(cfg: dict, sigmas: torch.Tensor, family: str) -> str:
    """The reference's sigma_dist that reproduces ``sigmas`` exactly, else ConfigError."""
    first, last, n = float(sigmas[0]), float(sigmas[-1]), len(sigmas)
    candidates = {
        "geometric": np.exp(np.linspace(math.log(first), math.log(last), n)),
        "uniform": np.linspace(first, last, n),
    }
    for name, levels in candidates.items():
        if family == "ncsn" and name != "geometric":
            continue
        if torch.allclose(torch.tensor(levels, dtype=torch.float32), sigmas.float(), rtol=1e-5, atol=0):
            return name
    allowed = "geometric" if family == "ncsn" else "geometric or linear"
    raise ConfigError(f"sigmas.kind={cfg['sigmas'].get('kind')!r}: the reference code can only use {allowed} levels")


def checkpoint_to_reference(ckpt: dict, path: str = "checkpoint") -> tuple[list, dict]:
    """A checkpoint of this repository -> (the list the reference code torch.loads, its .yml)."""
    saved = (ckpt.get("hyper_parameters") or {}).get("config")
    if not saved:
        raise ConfigError(f"ckpt_path={path!r}: the checkpoint carries no saved config")
    cfg = OmegaConf.create(saved)
    validate_sigmas(cfg)
    sigmas = build_sigmas(cfg)
    net = build_net(cfg.model, sigmas)
    try:
        family = family_of(net)
    except ReferenceFormatError as e:
        raise ConfigError(f"ckpt_path={path!r}: {e}") from None
    sd = ckpt["state_dict"]
    raw = {k[len("net.") :]: v for k, v in sd.items() if k.startswith("net.")}
    ema = {k[len("ema.module.") :]: v for k, v in sd.items() if k.startswith("ema.module.")} or None
    net_sigmas = raw.get("sigmas", net.sigmas)
    dist = _reference_sigma_dist(saved, net_sigmas, family)
    data_cls = str(cfg.data.get("_target_", "")).rsplit(".", 1)[-1]
    dataset = DATASETS.get(data_cls)
    allowed = {"ncsn": ("CIFAR10", "CELEBA", "MNIST"), "ncsnv2": ("CIFAR10", "CELEBA")}[family]
    if type(net).__name__ == "NCSNv2Deeper":
        raise ConfigError(
            "model NCSNv2Deeper: the reference code builds it only for LSUN, which this repository has no data for"
        )
    if dataset not in allowed:
        raise ConfigError(
            f"data {data_cls}: the reference {family} code has no such dataset (it has {', '.join(allowed)})"
        )
    try:
        model_sd = to_reference(raw, net)
        ema_sd = to_reference(ema, net, parameters_only=True) if ema is not None else None
    except ReferenceFormatError as e:
        raise ConfigError(f"ckpt_path={path!r}: {e}") from None
    notes = []
    if family == "ncsn" and ema_sd is not None:
        # NCSN's code has no EMA: hand over the weights this repository samples with.
        model_sd = to_reference(ema, net)  # type: ignore[arg-type]  # ema_sd is not None: ema is not
        ema_sd = None
        notes.append("NCSN has no EMA: the EMA weights were written as the model")
    opt = cfg.get("optim") or {}
    n_params = len(list(net.parameters()))
    optimizer = fresh_adam_state(
        n_params,
        float(opt.get("lr", 1e-3)),
        float(opt.get("beta1", 0.9)),
        float(opt.get("beta2", 0.999)),
        float(opt.get("eps", 1e-8)),
        float(opt.get("weight_decay", 0.0)),
        bool(opt.get("amsgrad", False)),
    )
    step = int(ckpt.get("global_step") or 0)
    states = ReferenceStates(family, model_sd, optimizer, int(ckpt.get("epoch") or 0), step, ema_sd)
    yml = _reference_yml(cfg, family, dataset, dist, net_sigmas, step, ema_sd is not None)
    return write_states(states), yml


def _reference_yml(cfg: DictConfig, family: str, dataset: str, dist: str, sigmas, step: int, ema: bool) -> dict:
    data, opt, sampler = cfg.data, cfg.get("optim") or {}, cfg.sampler
    anneal = float(OmegaConf.select(cfg, "loss.anneal_power", default=None) or 2.0)
    n_iters = int(OmegaConf.select(cfg, "trainer.max_steps", default=step) or step) + 1
    model: dict[str, Any] = {
        "sigma_begin": float(sigmas[0]),
        "sigma_end": float(sigmas[-1]),
        "num_classes": len(sigmas),
        "ngf": int(cfg.model.ngf),
    }
    optim = {
        "weight_decay": float(opt.get("weight_decay", 0.0)),
        "optimizer": "Adam",
        "lr": float(opt.get("lr", 1e-3)),
        "beta1": float(opt.get("beta1", 0.9)),
        "amsgrad": bool(opt.get("amsgrad", False)),
    }
    ydata: dict[str, Any] = {
        "dataset": dataset,
        "image_size": int(data.image_size),
        "channels": int(data.channels),
        "logit_transform": False,
        "random_flip": bool(data.get("random_flip", False)),
    }
    training: dict[str, Any] = {
        "batch_size": int(data.batch_size),
        "n_epochs": 500000,
        "n_iters": n_iters,
        "snapshot_freq": 5000,
    }
    if family == "ncsn":
        training |= {"ngpu": 1, "algo": "dsm", "anneal_power": anneal}
        return {"training": training, "data": ydata, "model": model | {"batch_norm": False}, "optim": optim}
    training |= {"snapshot_sampling": True, "anneal_power": anneal, "log_all_sigmas": False}
    sampling = {
        "batch_size": 100,
        "data_init": False,
        "step_lr": float(sampler.step_lr),
        "n_steps_each": int(sampler.n_steps_each),
        "ckpt_id": step,
        "final_only": True,
        "fid": False,
        "denoise": bool(sampler.denoise),
        "num_samples4fid": 10000,
        "inpainting": False,
        "interpolation": False,
        "n_interpolations": 15,
    }
    ydata |= {
        "uniform_dequantization": bool(data.get("dequantize", False)),
        "gaussian_dequantization": False,
        "rescaled": False,
        "num_workers": 4,
    }
    model |= {
        "ema": ema,
        "ema_rate": float(opt.get("ema_decay") or 0.999),
        "spec_norm": False,
        "sigma_dist": dist,
        "normalization": "InstanceNorm++",
        "nonlinearity": "elu",
    }
    optim["eps"] = float(opt.get("eps", 1e-8))
    return {"training": training, "sampling": sampling, "data": ydata, "model": model, "optim": optim}


def reference_yml_text(yml: dict, family: str) -> str:
    """The .yml text the reference code reads. NCSN's ``--test`` reads ``<run>/logs/<doc>/config.yml``,
    which its main.py wrote by dumping an ``argparse.Namespace``: written in that form. NCSNv2 reads
    ``configs/<name>.yml``, a plain mapping."""
    if family != "ncsn":
        return yaml.safe_dump(yml, sort_keys=False)

    def namespace(d: dict) -> argparse.Namespace:
        return argparse.Namespace(**{k: namespace(v) if isinstance(v, dict) else v for k, v in d.items()})

    return yaml.dump(namespace(yml), default_flow_style=False)


# -- sample.py's hook ---------------------------------------------------------------------------
def reference_checkpoint(cfg: DictConfig) -> dict | None:
    """sample.py: with ``reference`` set, the official checkpoint at ``ckpt_path`` converted in
    memory (None otherwise: ``ckpt_path`` is a checkpoint of this repository)."""
    reference = cfg.get("reference")
    config_path = cfg.get("reference_config")
    overrides = cfg.get("reference_overrides") or []
    if reference is None:
        if config_path is not None or overrides:
            raise ConfigError(
                f"reference_config={config_path!r} is set but reference=null: set reference=ncsn or "
                "reference=ncsnv2 for an official checkpoint"
            )
        return None
    if reference not in REFERENCES:
        raise ConfigError(f"reference={reference!r} is invalid: must be null, 'ncsn' or 'ncsnv2'")
    if config_path is None:  # the config.yml both codes save next to their checkpoints
        config_path = str(Path(str(cfg.ckpt_path)).parent / "config.yml")
        if not Path(config_path).is_file():
            raise ConfigError(
                f"reference_config=null and there is no {config_path}: set reference_config to the reference's .yml"
            )
    if not isinstance(config_path, str) or not config_path:
        raise ConfigError(f"reference_config={config_path!r} is invalid: must be the path of the reference's .yml")
    if not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ConfigError(f"reference_overrides={list(overrides)!r} is invalid: must be a list of key=value strings")
    paths = {k: str(cfg.paths[k]) for k in ("data_dir", "cache_dir") if k in cfg.get("paths", {})}
    return reference_to_checkpoint(cfg.ckpt_path, config_path, reference, list(overrides), paths)
