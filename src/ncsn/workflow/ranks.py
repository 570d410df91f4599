"""Processes of a run: which one writes the run directory, and how Lightning's DDP launcher
starts the other ranks on exactly this Hydra job."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from omegaconf import open_dict, read_write

from ..training.resume import PROGRESS_KEY
from .checkpoints import load_checkpoint


def pin_ddp_children_to_this_job(run_dir: Path) -> None:
    """Make Lightning's DDP launcher start ranks 1..N-1 on exactly this job.

    With ``strategy=ddp`` Lightning starts the other ranks by re-running ``sys.argv`` with
    ``hydra.run.dir`` taken from Hydra's config. Under ``-m`` that re-runs the *whole sweep* in
    every child, in another directory (Lightning issue 11300). Here, for a multirun job, the
    command becomes this job's own overrides (no ``-m``) and the run dir this job's directory.
    Flags must be written as ``--flag=value`` to be carried over.
    """
    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if str(hc.mode) != "RunMode.MULTIRUN":
        return
    flags = [a for a in sys.argv[1:] if a.startswith("-") and a not in ("-m", "--multirun")]
    sys.argv = [sys.argv[0], *flags, *hc.overrides.task]
    with read_write(hc), open_dict(hc):
        hc.run.dir = str(run_dir)


#: Set in the launching process by Lightning's DDP launcher; the next job of a sweep would take
#: them as "processes created externally" and wait forever for ranks nobody starts.
DDP_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def restore_env(saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


#: Set (to a non-zero value) in every process of a run but the one that writes its directory:
#: Lightning's DDP children (LOCAL_RANK), torchrun (RANK), other nodes (NODE_RANK), SLURM tasks.
RANK_ENV = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_run_dir_writer() -> bool:
    """The process that writes the run directory: global rank 0, the one that launches the
    other ranks (they inherit or are given a non-zero rank in their environment)."""
    return all(os.environ.get(k, "0") in ("", "0") for k in RANK_ENV)


def ranks_progress(trainer, run_dir: Path, step: int, epoch: int) -> tuple[int, int]:
    """(global step, 0-based last epoch) of the fit: ``step`` and ``epoch`` from this process's
    loop, unless the ranks ran in processes it started (``ddp_fork``/``ddp_spawn``: its own loop
    never ran); then from their checkpoints/last.ckpt's progress record (``PROGRESS_KEY``)."""
    if not isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher):
        return step, epoch
    last = run_dir / "checkpoints" / "last.ckpt"
    progress = load_checkpoint(last).get(PROGRESS_KEY) if last.is_file() else None
    if progress is None:
        return step, epoch
    return int(progress["global_step"]), max(int(progress["epochs_started"]) - 1, 0)
