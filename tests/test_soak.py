"""The soak's short version (bench/soak.py --quick): a 3-job DDP multirun (2 CPU processes per
job) receives 6 SIGKILL / SIGTERM / SIGINT at random moments, re-run after each with the same
hydra.sweep.dir, then runs to completion; every job must end with the straight run's weights and
optimizer state, metrics.csv rows unique, in order and equal to the straight run's, one W&B id
per job, results.json finished, no temporary files and no process left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_quick_soak_resumes_every_job_exactly(tmp_path):
    """6 signals at seeded moments: every job's weights, EMA and optimizer equal the straight
    run's, metrics.csv and W&B are whole, no process hangs or is left behind. Exit statuses are
    reported, not asserted: a signal to every process while DDP starts up can still end with
    another status than 0 / 130 (docs/runs.md, the full soak's result); where it lands depends on
    the machine's speed."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--quick", "--exit-codes", "report", "--out", str(tmp_path)],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "soak: passed" in res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp_fork", "ddp_spawn"])
def test_multiprocessing_ddp_multirun_records_the_ranks_step_and_one_wandb_run_per_job(tmp_path, strategy):
    """Under ddp_fork / ddp_spawn the launching process never runs the training loop: results.json
    still holds the step and epoch the ranks reached, and each job is one W&B id whose records hold
    every training step and the end-of-run results (under ddp_fork rank 0 ends its run before
    exiting and the launching process continues it). ddp_spawn also pickles the model (its EMA)
    and the callbacks."""
    from conftest import TINY_DIGITS, run_cli, sweep_job

    from ncsn.training.wandb_offline import read_offline_run

    sweep = tmp_path / "sweep"
    res = run_cli(
        "train.py",
        "-m",
        "seed=1,2",
        *TINY_DIGITS,
        "callbacks.samples.every_n_epochs=2",
        "trainer.check_val_every_n_epoch=2",
        "fid.backend=none",
        "callbacks.best=null",
        f"trainer.strategy={strategy}",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "data.batch_size=16",
        "sampler.n_samples=9",  # uneven over the 2 ranks (5 + 4): the grid's all_gather pads the shorter share
        "logger=default",
        "logger.wandb.mode=offline",
        "logger.wandb.id=fork-seed${seed}",
        "logger.wandb.resume=allow",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "is in use" not in res.stdout + res.stderr
    for seed in (1, 2):
        job = sweep_job(sweep, f"seed={seed}")
        results = json.loads((job / "results.json").read_text())
        assert (results["global_step"], results["epoch"]) == (6, 1)
        runs = [read_offline_run(f) for f in sorted(job.glob("wandb/offline-run-*/run-*.wandb"))]
        assert {r["run"]["id"] for r in runs} == {f"fork-seed{seed}"}
        steps = {int(h["trainer/global_step"]) for r in runs for h in r["history"] if "train/loss" in h}
        assert steps == set(range(1, 7))
        summary = {k: v for r in runs for k, v in r["summary"].items()}
        assert summary.get("results/global_step") == 6, sorted(summary)
        assert len(list((job / "samples").glob("epoch*.png"))) == 1  # the grid of the validation at step 6


@pytest.mark.slow
def test_sigterm_to_the_launching_process_stops_every_ddp_rank_together(tmp_path):
    """strategy=ddp, SIGTERM to rank 0 only (the launching process) mid-training: every rank stops
    after the same batch (they agree after each batch), last.ckpt is saved there, exit 0, and
    results.json says preempted at that step. Lightning's own handler hung here."""
    import signal
    import time

    from conftest import TINY_DIGITS

    run_dir = tmp_path / "run"
    settings = [o for o in TINY_DIGITS if not o.startswith("trainer.max_steps")]
    cmd = [sys.executable, str(ROOT / "train.py"), *settings, "trainer.max_steps=400", "fid=none"]
    cmd += ["callbacks.best=null", "logger=csv", "sampler.n_samples=8", "trainer.strategy=ddp", "trainer.devices=2"]
    cmd += ["trainer.accelerator=cpu", "data.batch_size=16", f"hydra.run.dir={run_dir}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        metrics = run_dir / "metrics.csv"
        while proc.poll() is None and (not metrics.is_file() or len(metrics.read_text().splitlines()) < 8):
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "preempted" and 0 < results["global_step"] < 400, results
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == results["global_step"]
