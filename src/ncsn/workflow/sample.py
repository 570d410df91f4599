"""sample.py's workflow: a checkpoint (and its saved config) -> the sampler -> PNG grid and .npz."""

from __future__ import annotations

import errno
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from ..core.checks import cannot_write, unwritable
from ..core.speed import NNPACKConv2d, nnpack_convs
from .build import build_datamodule, build_net, build_sampler, build_sigmas, check_net_matches_data
from .checkpoints import check_architecture, load_checkpoint, net_state_dict
from .config import CONF_DIR, ConfigError, atomic_write_text, validate_sample, validate_sigmas, write_hydra_record
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


def kind_settings(kind: str) -> dict:
    """The keys ``conf/sampler/<kind>.yaml`` sets on top of annealed.yaml (which every kind builds
    on), plus the grid keys ``num_steps``/``rho``: what a change of kind at sampling time starts
    from ({} without conf/, e.g. an installed copy)."""
    path = CONF_DIR / "sampler" / f"{kind}.yaml"
    if not path.is_file():
        return {}
    base = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sampler" / "annealed.yaml"))
    own = OmegaConf.to_container(OmegaConf.load(path)) if kind != "annealed" else {"kind": kind}
    own.pop("defaults", None)
    return {"num_steps": base["num_steps"], "rho": base["rho"], **own}


def merged_sampler_cfg(train_cfg: DictConfig, overrides: DictConfig, explicit=()) -> DictConfig:
    """The training run's sampler settings, with every non-null key of sample.py's ``sampler``
    and every key in ``explicit`` (written on the command line: there ``sampler.rho=null`` means
    null). When ``sampler.kind`` changes, the new kind's own settings (``kind_settings``: e.g.
    ode's rho 7, pc's snr, cas's step_lr; no grid for annealed) replace the training run's first."""
    cfg = OmegaConf.to_container(train_cfg.sampler, resolve=True)
    given = OmegaConf.to_container(overrides, resolve=True)
    given = {k: v for k, v in given.items() if v is not None or k in explicit}
    if given.get("kind", cfg.get("kind")) != cfg.get("kind"):
        cfg.update(kind_settings(given["kind"]))
    cfg.update(given)
    return OmegaConf.create(cfg)


def command_line_keys(prefix: str) -> set[str]:
    """The keys under ``prefix`` that this Hydra job's command line sets (e.g. ``sampler.rho=null``
    -> ``rho``); empty outside Hydra."""
    if not HydraConfig.initialized():
        return set()
    keys = (o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task)
    return {k[len(prefix) + 1 :] for k in keys if k.startswith(prefix + ".")}


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
    results.json. Other modes: see ``sample_modes``."""
    validate_sample(cfg)
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
    sampler_cfg = merged_sampler_cfg(train_cfg, cfg.sampler, command_line_keys("sampler"))
    sampler = build_sampler(sampler_cfg)

    resolved = OmegaConf.to_container(cfg, resolve=True)
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
    entries = {p: None for p in out_dir.iterdir()}
    if record.is_dir():
        entries.update({p: _text(p) if p.suffix == ".yaml" else None for p in record.iterdir()})
    return entries


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
