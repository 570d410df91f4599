"""sample.py's workflow: a checkpoint (and its saved config) -> the sampler -> PNG grid and .npz."""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from ..core.checks import cannot_write, unwritable
from ..core.speed import NNPACKConv2d, nnpack_convs
from .build import (
    build_datamodule,
    build_net,
    build_sigmas,
    check_net_matches_data,
    check_sampler_fits,
    kind_settings,
)
from .checkpoints import check_architecture, load_checkpoint, net_state_dict
from .config import (
    CONF_DIR,
    SAMPLER_SHARED,
    ConfigError,
    atomic_write_text,
    validate_sample,
    validate_sigmas,
    write_hydra_record,
)
from .overrides import check_overrides_honoured
from .reference import reference_checkpoint
from .sample_modes import ModeContext, check_mode


def load_run(ckpt_path: str, device: str = "cpu", ckpt: dict | None = None):
    """(saved training config, EMA network in eval mode, data module) from a checkpoint alone.
    ``ckpt``: the checkpoint dict already in memory (an official one converted by ``reference``)."""
    ckpt = load_checkpoint(ckpt_path) if ckpt is None else ckpt
    saved = (ckpt.get("hyper_parameters") or {}).get("config")
    if not saved:
        raise ConfigError(
            f"ckpt_path={ckpt_path!r}: the checkpoint carries no saved config "
            "(was it written by this project's train.py?)"
        )
    train_cfg = OmegaConf.create(saved)
    validate_sigmas(train_cfg)
    sigmas = build_sigmas(train_cfg)
    net = build_net(train_cfg.model, sigmas)
    weights = net_state_dict(ckpt, prefer_ema=True)
    check_architecture(net, weights, ckpt_path)
    net.load_state_dict(weights)
    datamodule = build_datamodule(train_cfg, 1)
    check_net_matches_data(net, tuple(datamodule.data_shape))
    return train_cfg, net.to(device).eval(), datamodule


#: kind -> class of a sampler node saved before the kinds were objects (``_target_: ncsn.sampling.Sampler``)
_OLD_KINDS = {"annealed": "Annealed", "langevin": "Langevin", "cas": "CAS", "pc": "PC", "ode": "ODE"}


def upgraded_sampler(node: dict, sigmas) -> dict:
    """A checkpoint's ``sampler`` node in today's form: one saved before the kinds were objects
    (``_target_: ncsn.sampling.Sampler``, every kind's settings in one list; langevin ran
    n_steps_each x L steps, cas's step was step_lr / sigma_L^2) as the same sampler; others as they are."""
    if node.get("_target_") != "ncsn.sampling.Sampler":
        return node
    kind, steps, grid = node["kind"], node["n_steps_each"], {"num_steps": node["num_steps"], "rho": node["rho"]}
    own = {
        "annealed": {"step_lr": node["step_lr"], "n_steps_each": steps},
        "langevin": {"step_lr": node["step_lr"], "n_steps": steps * len(sigmas), "frame_every": steps},
        "cas": {"eta": node["step_lr"] / float(sigmas[-1]) ** 2, **grid},
        "pc": {"snr": node["snr"], "n_corrector": node["n_corrector"], **grid},
        "ode": grid,
    }[kind]
    shared = {k: node[k] for k in SAMPLER_SHARED if k in node}
    return {"kind": kind, "_target_": f"ncsn.sampling.{_OLD_KINDS[kind]}", **own, **shared}


def merged_sampler_cfg(train_cfg: DictConfig, given: DictConfig, explicit=(), chosen: bool = False) -> DictConfig:
    """The sampler sample.py uses: the training run's (``train_cfg.sampler``), with every key of
    sample.py's ``sampler`` node that is non-null or in ``explicit`` (written on the command line:
    there ``sampler.rho=null`` means null). ``chosen`` (``sampler=<kind>`` on the command line):
    ``given`` is conf/sampler/<kind>.yaml composed, whose kind and kind settings replace the
    training run's, which keeps its shared settings unless the command line sets them."""
    cfg = cast(dict, OmegaConf.to_container(train_cfg.sampler, resolve=True))
    new = cast(dict, OmegaConf.to_container(given, resolve=True))
    if chosen:
        own = ("kind", "_target_", *kind_settings(new["_target_"]))
        cfg = {**{k: v for k, v in cfg.items() if k in SAMPLER_SHARED}, **{k: new[k] for k in own}}
        new = {k: v for k, v in new.items() if k in explicit}
    cfg.update({k: v for k, v in new.items() if v is not None or k in explicit})
    return cast(DictConfig, OmegaConf.create(cfg))


def kind_chosen() -> bool:
    """Whether this Hydra job's command line chose a sampler kind (``sampler=<kind>``)."""
    return HydraConfig.initialized() and HydraConfig.get().runtime.choices.get("sampler") not in (None, "null")


def command_line_keys(prefix: str, overrides=None) -> set[str]:
    """The keys under ``prefix`` that the command line ``overrides`` (default: this Hydra job's)
    sets (e.g. ``sampler.rho=null`` -> ``rho``); empty outside Hydra."""
    if overrides is None:
        if not HydraConfig.initialized():
            return set()
        overrides = HydraConfig.get().overrides.task
    keys = (o.split("=", 1)[0].lstrip("+~") for o in overrides)
    return {k[len(prefix) + 1 :] for k in keys if k.startswith(prefix + ".")}


def sampler_cfg_for(train_cfg: DictConfig, overrides=()) -> DictConfig:
    """The sampler node sample.py uses for a checkpoint's training config and the sample.py
    command-line ``overrides`` (``sampler=<kind>``, ``sampler.<key>=<value>``), composed by Hydra as
    that command line is: for scripts and tests (outside a Hydra job)."""
    from hydra import compose, initialize_config_dir

    overrides = list(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("sample", overrides=["ckpt_path=-", *overrides], return_hydra_config=True)
    chosen = cfg.hydra.runtime.choices.get("sampler") not in (None, "null")
    return merged_sampler_cfg(train_cfg, cfg.sampler, command_line_keys("sampler", overrides), chosen)


def job_sampler_cfg(cfg: DictConfig, train_cfg: DictConfig, net) -> DictConfig:
    """The sampler node this sample.py job uses for a checkpoint (``load_run``'s ``train_cfg`` and
    ``net``; its saved sampler upgraded in place): sample() and mode=rescore (each job's checkpoint)."""
    with open_dict(train_cfg):
        train_cfg.sampler = upgraded_sampler(
            cast(dict, OmegaConf.to_container(train_cfg.sampler, resolve=True)), net.sigmas
        )
    return merged_sampler_cfg(train_cfg, cfg.sampler, command_line_keys("sampler"), kind_chosen())


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}: CUDA is not available on this machine (use device=cpu)")
    return device


def distributed_rank() -> tuple[int, int]:
    """(rank, world size): under torchrun (WORLD_SIZE > 1) joins the process group (gloo on the
    CPU, nccl on GPUs) once; else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def sample(cfg: DictConfig) -> dict:
    """mode=samples: draw ``sampler.n_samples`` samples; write samples.npz, samples.png and
    results.json. Other modes: see ``sample_modes``; mode=rescore: ``rescore``."""
    validate_sample(cfg)
    if cfg.mode == "rescore":  # every finished job of a train.py sweep (its own module)
        from .rescore import rescore

        return rescore(cfg)
    out_dir = Path(cfg.out_dir)
    problem = unwritable(out_dir, "out_dir")  # read-only or full: refused before any work
    if problem:
        raise ConfigError(problem)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    rank, world_size = distributed_rank()
    if world_size > 1 and device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    train_cfg, net, datamodule = load_run(cfg.ckpt_path, device, reference_checkpoint(cfg))
    if cfg.nnpack:
        nnpack_convs(net)  # CPU fp32 only (a no-op elsewhere); same weights, Winograd 3x3 convs
    sampler_cfg = job_sampler_cfg(cfg, train_cfg, net)
    sampler = check_sampler_fits(sampler_cfg, net, net.sigmas)  # e.g. sampler=edm on a level net: refused here

    resolved = cast(dict, OmegaConf.to_container(cfg, resolve=True))
    resolved["sampler"] = OmegaConf.to_container(sampler_cfg)  # the settings actually used
    resolved["train_config"] = OmegaConf.to_container(train_cfg)
    check_overrides_honoured(resolved)  # every key the user set holds its value, or exit 2
    mode = check_mode(cfg.mode, sampler, world_size)
    ctx = ModeContext(cfg, train_cfg, net, datamodule, sampler, out_dir, device, rank, world_size)
    results = {"status": "finished", "mode": cfg.mode, "ckpt_path": str(cfg.ckpt_path)}
    results["nnpack_convs"] = sum(isinstance(m, NNPACKConv2d) for m in net.modules())  # convs on NNPACK
    with refused_leaves_nothing(out_dir):
        atomic_write_text(out_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
        write_hydra_record(out_dir)
        if HydraConfig.initialized():  # the user's task overrides, as train.py records them (read by compare)
            task = OmegaConf.create(list(HydraConfig.get().overrides.task))
            atomic_write_text(out_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(task))
        try:
            results.update(mode.run(ctx))
        except ValueError as e:  # a sampler setting this network cannot take (e.g. sampler.num_steps)
            if isinstance(e, ConfigError) or not str(e).startswith("sampler."):
                raise
            raise ConfigError(str(e)) from None
        if rank == 0:
            atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, sort_keys=True))
    return results


#: OSErrors of a write that has no room (or may not write) wherever it happens
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


@contextmanager
def refused_leaves_nothing(out_dir: Path):
    """The writing part of a sample.py run. A write that fails for want of room or permission in
    ``out_dir`` becomes a ConfigError (one line, exit 2). On a ConfigError the files and folders
    this run added to ``out_dir`` (and its ``.hydra``) are removed again, ``out_dir`` itself when
    this run made it, and an earlier run's record is put back: a refused run leaves what was there
    before (a fresh run directory: only Hydra's job log, which ``record_bad_input`` removes)."""
    before = _entries(out_dir) if out_dir.is_dir() else None
    try:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            yield
        except OSError as e:
            inside = e.filename is not None and Path(e.filename).absolute().is_relative_to(out_dir.absolute())
            if e.errno not in _NO_ROOM and not inside:
                raise
            raise ConfigError(cannot_write(out_dir, "out_dir", e)) from None
    except ConfigError:
        if before is None:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        for path in set(_entries(out_dir)) - set(before):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for path, record in before.items():
            if record is not None and _text(path) != record:
                try:
                    atomic_write_text(path, record)  # the earlier run's record, overwritten by this run's
                except OSError:
                    pass
        raise


def _entries(out_dir: Path) -> dict:
    """{path: None} of what ``out_dir`` and its ``.hydra`` hold; the record files (``.hydra/*.yaml``,
    a few kB) with their text."""
    record = out_dir / ".hydra"
    entries: dict[Path, str | None] = {p: None for p in out_dir.iterdir()}
    if record.is_dir():
        entries.update({p: _text(p) if p.suffix == ".yaml" else None for p in record.iterdir()})
    return entries


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
