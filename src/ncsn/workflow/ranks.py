"""Processes of a run: which one writes the run directory, and how Lightning's DDP launcher
starts the other ranks on exactly this Hydra job."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning.pytorch.strategies.launchers.subprocess_script as subprocess_launcher
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from omegaconf import open_dict, read_write

from ..training.resume import PROGRESS_KEY
from .checkpoints import load_checkpoint

log = logging.getLogger(__name__)


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
    with read_write(hc), open_dict(hc):  # type: ignore[arg-type]  # HydraConf is a DictConfig at run time
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


@contextmanager
def sigint_to_rank_zero(trainer) -> Iterator[None]:
    """Around ``trainer.fit``: under ``strategy=ddp`` (Lightning's launcher re-runs the command for
    ranks 1..N-1) rank 0 alone acts on Ctrl-C: it stops every rank, records the run as interrupted
    and exits 130, also when the SIGINT reaches every process (a terminal's Ctrl-C, SLURM's).

    * The child ranks start with SIGINT blocked (rank 0 blocks it while it starts them; the mask is
      inherited, and Python then installs no KeyboardInterrupt): a Ctrl-C while they start would
      end a child before it joins the process group, while rank 0 waits for it there (in C++,
      where no KeyboardInterrupt is raised) until Lightning's observer SIGKILLs it (exit -9).
      Rank 0's own Ctrl-C handling (Lightning's) SIGKILLs the children.
    * Lightning's observer thread, which SIGKILLs every process, rank 0 included, within 5 s of a
      child's non-zero exit (so that no rank waits forever in a collective for a dead one), is
      replaced by ``RanksObserver``: the same, except once rank 0 is stopping by itself (Ctrl-C, or
      fit has ended and it writes its records); Lightning's Ctrl-C handling kills the children, and
      its observer then killed rank 0 while it recorded the run.

    Other launchers (``ddp_fork``, ``ddp_spawn``), a process that did not start the ranks and a
    single process: nothing changes."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if (
        not isinstance(launcher, subprocess_launcher._SubprocessScriptLauncher)
        or launcher.cluster_environment.creates_processes_externally
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return
    stopping = threading.Event()
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum, frame):
        stopping.set()
        raise KeyboardInterrupt

    def started(procs) -> None:  # called by the launcher once the children run
        RanksObserver(procs, stopping).start()
        signal.signal(signal.SIGINT, interrupted)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C that came meanwhile is raised here

    lightnings = subprocess_launcher._launch_process_observer
    subprocess_launcher._launch_process_observer = started  # type: ignore[assignment]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        stopping.set()
        subprocess_launcher._launch_process_observer = lightnings
        if signal.getsignal(signal.SIGINT) is interrupted:  # (Lightning's Ctrl-C handling ignores further ones)
            signal.signal(signal.SIGINT, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class RanksObserver(threading.Thread):
    """Every ``period_s``: once a child rank has ended with a non-zero status while rank 0 is not
    ``stopping``, SIGKILL the other children and this process, as Lightning's observer does (rank 0
    may wait for the dead rank in a collective forever); done when all ended with 0."""

    def __init__(self, procs, stopping: threading.Event, period_s: float = 5.0):
        super().__init__(daemon=True, name="ranks-observer")
        self.procs, self.stopping, self.period_s = procs, stopping, period_s

    def run(self) -> None:
        while not self.stopping.wait(self.period_s):
            codes = [p.poll() for p in self.procs]
            if all(code == 0 for code in codes):
                return
            failed = [(p.pid, code) for p, code in zip(self.procs, codes) if code]
            if failed and not self.stopping.is_set():
                log.error("child rank (pid, status) %s ended: stopping every rank", failed)
                for p in self.procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
