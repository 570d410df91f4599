"""Shared test setup: CPU only, W&B offline, one thread per test process (2-core CI), Ctrl-C as
in a terminal."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)
# Tests send SIGINT (Ctrl-C) to themselves and to the commands they start. A process a shell starts
# in the background (nohup, `&` in a script) begins with SIGINT ignored, its children inherit that,
# and Python then raises no KeyboardInterrupt: give SIGINT its handler back, so those tests mean the
# same wherever they run (a child of a process with a handler starts with the default action).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_cli(script: str, *overrides: str, cwd: Path | None = None, timeout: int = 600, env_extra=None):
    """Run train.py / sample.py in a subprocess; return the CompletedProcess (never raises)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    """A TCP port free now on 127.0.0.1 (the OS picks it), for a process group's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cli():
    return run_cli


#: Tiny sizes for any digits run (the default run included: python train.py *TINY).
TINY = [
    "model.ngf=8",
    "model.num_blocks=1",
    "trainer.max_steps=6",
    "trainer.limit_train_batches=3",
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "sampler.n_samples=9",
    "callbacks.samples.every_n_epochs=1",
    "callbacks.checkpoint.every_n_train_steps=3",
    "data.num_val=64",
    "data.batch_size=64",
    "logger=csv",
]
#: A tiny NCSN digits run (experiment=digits_ncsn: level-conditioned net, annealed Langevin), the
#: setup most end-to-end tests use.
TINY_DIGITS = ["experiment=digits_ncsn", *TINY, "sampler.n_steps_each=2"]


def job_dirs(sweep: Path) -> list[Path]:
    """The job directories of a ``-m`` sweep (those directly under it with ``.hydra/config.yaml``;
    not what a job writes inside itself, e.g. its ``rescore/`` runs), sorted."""
    return sorted(p.parent.parent for p in Path(sweep).glob("*/.hydra/config.yaml"))


def sweep_job(sweep: Path, *settings: str) -> Path:
    """The job directory of a ``-m`` sweep whose overrides include ``settings`` (e.g. "seed=1"):
    sweep jobs are named by their settings (conf/hydra/default.yaml), not numbered."""
    from omegaconf import OmegaConf

    found = [
        p.parent.parent
        for p in Path(sweep).glob("*/.hydra/overrides.yaml")
        if set(settings) <= set(OmegaConf.load(p) or [])
    ]
    assert len(found) == 1, f"{settings}: {found}"
    return found[0]
