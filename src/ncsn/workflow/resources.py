"""Sizes a training run cannot hold, refused before anything is allocated or written.

``check_memory``: before the noise levels, the network or any data exist, a lower bound of the
memory the run needs, against the machine's memory (``available_memory``):

* the noise levels: 48 bytes per level (the float64 levels, the Python floats they are computed
  from, the network's and the EMA copy's float32 buffers);
* the network with its gradients, the two Adam moments and the EMA copy: 5 x 4 bytes per
  parameter, counted on a copy built on PyTorch's ``meta`` device (no memory), so the
  parameters a level-conditioned network holds per noise level are counted too;
* one training batch of each process: the clean, noise and perturbed images, 3 x 4 bytes per
  value (activations come on top: this is a lower bound);

each times the processes of this machine (DDP: every process builds its own copy).

The refusal names the key of the largest part (``sigmas.num_scales``, ``data.batch_size`` or
``model``), its value and the estimate. ``check_disk``: the run directory's filesystem must have
room for two checkpoints (one written beside the last). ``check_batch_fits``: a batch larger
than the training set is refused (no training step would run).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from omegaconf import DictConfig

from .build import build_net
from .config import ConfigError
from .ranks import is_run_dir_writer

BYTES_PER_LEVEL = 48
BYTES_PER_PARAMETER = 5 * 4  # weights, gradients, two Adam moments, EMA
BYTES_PER_BATCH_VALUE = 3 * 4  # clean, noise, perturbed
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def available_memory() -> int:
    """The machine's physical memory, or the container's (cgroup) limit when that is smaller."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in CGROUP_LIMITS:
        try:
            total = min(total, int(Path(path).read_text().strip()))
        except (OSError, ValueError):  # absent, or "max": no limit
            pass
    return total


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB"


def parameter_counts(model_cfg: DictConfig, num_scales: int) -> tuple[int, int]:
    """(parameters with one noise level, parameters per further level) of the configured network,
    built on the ``meta`` device (nothing allocated)."""
    counts = []
    for levels in (1, 2) if num_scales > 1 else (1,):
        with torch.device("meta"):
            net = build_net(model_cfg, torch.empty(levels, dtype=torch.float64))
        counts.append(sum(p.numel() for p in net.parameters()))
    return counts[0], (counts[1] - counts[0] if len(counts) > 1 else 0)


def memory_estimate(cfg: DictConfig, world: int, data_shape: tuple) -> dict:
    """{key: (value, bytes)} of the three parts described in the module docstring, for all the
    processes of this machine (each builds its own copy: ``world`` / ``trainer.num_nodes``)."""
    levels = int(cfg.sigmas.num_scales)
    base, per_level = parameter_counts(cfg.model, levels)
    per_process = cfg.data.batch_size // world
    here = max(world // int(cfg.trainer.get("num_nodes") or 1), 1)
    return {
        "sigmas.num_scales": (levels, here * levels * (BYTES_PER_LEVEL + per_level * BYTES_PER_PARAMETER)),
        "model": (str(cfg.model.get("_target_")), here * base * BYTES_PER_PARAMETER),
        "data.batch_size": (cfg.data.batch_size, here * per_process * math.prod(data_shape) * BYTES_PER_BATCH_VALUE),
    }


def check_memory(cfg: DictConfig, world: int, data_shape: tuple) -> None:
    parts = memory_estimate(cfg, world, data_shape)
    total, have = sum(b for _, b in parts.values()), available_memory()
    if total <= have:
        return
    key = max(parts, key=lambda k: parts[k][1])
    (_, levels), (_, net), (_, batch) = parts.values()
    raise ConfigError(
        f"{key}={parts[key][0]!r} is invalid: the run needs at least {_gb(total)} of memory (noise levels "
        f"with their per-level parameters {_gb(levels)}, the network with gradients, Adam and EMA {_gb(net)}, "
        f"one batch {_gb(batch)}) and this machine has {_gb(have)}"
    )


def check_resources(cfg: DictConfig, world: int, data_shape: tuple) -> None:
    """``check_memory``, then (in the process that writes the run directory) ``check_disk``."""
    check_memory(cfg, world, data_shape)
    if is_run_dir_writer():
        check_disk(cfg, Path(cfg.paths.run_dir))


def check_disk(cfg: DictConfig, run_dir: Path) -> None:
    """Room for two checkpoints (weights, EMA, two Adam moments, the levels) in the run directory."""
    levels = int(cfg.sigmas.num_scales)
    base, per_level = parameter_counts(cfg.model, levels)
    checkpoint = 4 * 4 * (base + per_level * (levels - 1)) + 2 * 4 * levels
    existing = next(d for d in (run_dir, *run_dir.parents) if d.exists())  # the filesystem it is (or will be) on
    free = shutil.disk_usage(existing).free
    if 2 * checkpoint > free:
        raise ConfigError(
            f"run directory {run_dir} has {_gb(free)} free: a checkpoint of this run takes about "
            f"{_gb(checkpoint)} (twice that while one is written); free some space or use another hydra.run.dir"
        )


def check_batch_fits(batch_size: int, world: int, n_train: int) -> None:
    """Each process takes ``batch_size // world`` examples a step from its shard of
    ``ceil(n_train / world)`` (``data.base.EpochShuffle``): a batch larger than the shard would
    never make one step (or one partial batch an epoch)."""
    per_process, shard = batch_size // world, -(-n_train // world)
    if per_process > shard:
        each = f"; each of the {world} processes takes {per_process} of its {shard}" if world > 1 else ""
        raise ConfigError(
            f"data.batch_size={batch_size} is invalid: must be at most the training set's {n_train} examples{each}"
        )
