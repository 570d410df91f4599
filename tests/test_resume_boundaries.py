"""Exact resume from a checkpoint written at an epoch's last batch, by each path that writes one.

Epochs of 4 batches cut by ``trainer.limit_train_batches`` (the digits set has many more), as in
bench/soak.py; validation after every second epoch (step 8, not step 4); a periodic checkpoint
every 4 steps, so each one lands on an epoch's last batch. Each case stops a run at step 4 (no
validation due) or 8 (validation due), then the same command resumes it to step 12; its weights,
EMA and optimizer state and its metrics.csv rows must be the straight run's:

* ``periodic``: Ctrl-C (SIGINT) in ``on_train_epoch_end``, i.e. after the periodic checkpoint of
  the last batch and before the epoch closed (a SIGKILL there resumes from the same file);
* ``sigterm``: SIGTERM during the last batch: the preemption checkpoint, once the epoch closed;
* ``max_steps``: fit ended by ``trainer.max_steps`` at the epoch's end, then the same command
  longer: with a checkpoint every 4 steps last.ckpt is the periodic one; with none before the
  stop (every 5 steps for step 4, every 9 for step 8), the one Lightning writes at the end of fit.
"""

import csv
import json
import math
import os
import signal

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir

import ncsn.training.score_model
from ncsn.workflow.entry import EXIT_INTERRUPTED, EXIT_OK, run_entry
from ncsn.workflow.train import train

SETTINGS = [
    "model.ngf=8",
    "model.num_blocks=1",
    "data.batch_size=32",
    "data.num_val=32",
    "trainer.limit_train_batches=4",
    "trainer.check_val_every_n_epoch=2",
    "callbacks.samples.every_n_epochs=1000",
    "callbacks.best=null",
    "fid=none",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]
END = 12


def config(run_dir, every, max_steps=END):
    overrides = [*SETTINGS, f"callbacks.checkpoint.every_n_train_steps={every}", f"trainer.max_steps={max_steps}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.run_dir={run_dir}"])


def state(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    tensors = {f"sd.{k}": v for k, v in ckpt["state_dict"].items()}
    for i, opt in enumerate(ckpt["optimizer_states"]):
        for p, s in opt["state"].items():
            tensors.update({f"opt{i}.{p}.{k}": v for k, v in s.items()})
    return ckpt["global_step"], tensors


def rows(run_dir):
    """metrics.csv: (step, epoch, the keys logged, their values) per row, timings left out."""
    with open(run_dir / "metrics.csv", newline="") as f:
        out = []
        for row in csv.DictReader(f):
            logged = {k: float(v) for k, v in row.items() if v and k not in ("step", "epoch") and "time" not in k}
            out.append((int(row["step"]), int(row["epoch"]), logged))
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The straight run's directory for a checkpoint interval (run once per interval)."""
    runs = {}

    def run(every):
        if every not in runs:
            runs[every] = tmp_path_factory.mktemp(f"straight{every}")
            assert run_entry(train, config(runs[every], every)) == EXIT_OK
        return runs[every]

    return run


def stop_at(monkeypatch, hook: str, step: int, signum: int) -> None:
    """Send ``signum`` to this process in ``ScoreModel.<hook>`` once fit reaches ``step`` (during
    ``training_step``: the batch that makes it ``step``)."""
    real = getattr(ncsn.training.score_model.ScoreModel, hook)

    def patched(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        reached = self.trainer.global_step + (hook == "training_step")
        if reached == step and not self.trainer.sanity_checking:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(ncsn.training.score_model.ScoreModel, hook, patched)


SLOW = [("periodic", 8, 4), ("sigterm", 4, 4), ("sigterm", 8, 4)]
SLOW += [("max_steps", 4, 4), ("max_steps", 8, 4), ("max_steps", 4, 5), ("max_steps", 8, 9)]
CASES = [
    ("periodic", 4, 4),  # the one the soak found (the resumed run trained a 5th batch in the epoch)
    *(pytest.param(*case, marks=pytest.mark.slow) for case in SLOW),
]


@pytest.mark.parametrize(("path", "step", "every"), CASES)
def test_resume_from_an_epochs_last_batch_equals_the_straight_run(tmp_path, monkeypatch, straight, path, step, every):
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        if path == "periodic":
            stop_at(patch, "on_train_epoch_end", step, signal.SIGINT)
            assert run_entry(train, config(run_dir, every)) == EXIT_INTERRUPTED
        elif path == "sigterm":
            stop_at(patch, "training_step", step, signal.SIGTERM)
            assert run_entry(train, config(run_dir, every)) == EXIT_OK  # preempted
        else:
            assert run_entry(train, config(run_dir, every, max_steps=step)) == EXIT_OK
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    assert run_entry(train, config(run_dir, every)) == EXIT_OK  # the same command: resumes at `step`

    (n_a, a), (n_b, b) = state(straight(every)), state(run_dir)
    assert n_a == n_b and a.keys() == b.keys()  # (the last periodic checkpoint's step: 12, 10 or 9)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-7), k
    got, want = rows(run_dir), rows(straight(every))
    assert [r[:2] for r in got] == [r[:2] for r in want]  # same steps, each in the straight run's epoch
    for (s, _, x), (_, _, y) in zip(got, want):
        assert x.keys() == y.keys(), s
        assert all(math.isclose(x[k], y[k], rel_tol=1e-5, abs_tol=1e-7) for k in x), (s, x, y)


FINAL_VAL = ["callbacks.samples.every_n_epochs=2", "fid=classifier", "fid.classifier_epochs=3", "eval.n_samples=16"]
FINAL_VAL += ["fid.ci_bootstraps=0", "fid.kid_subsets=2", "sampler.n_samples=4"]


def test_a_kill_during_the_final_validation_runs_it_on_resume(tmp_path, monkeypatch):
    """Ctrl-C during the validation (samples, FID) due at ``trainer.max_steps`` (step 8, after
    last.ckpt of that step): the same command runs that validation before fit ends, so metrics.csv
    has the straight run's step-8 val/loss and FID row and results.json its final values."""
    cache = [f"paths.cache_dir={tmp_path / 'cache'}"]

    def cfg(run_dir):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            over = [*SETTINGS, *FINAL_VAL, *cache, "callbacks.checkpoint.every_n_train_steps=4", "trainer.max_steps=8"]
            return compose("train", overrides=[*over, f"paths.run_dir={run_dir}"])

    straight_dir, run_dir = tmp_path / "straight", tmp_path / "run"
    # a first run fills the FID cache (training the classifier there draws from the global generators)
    assert run_entry(train, cfg(tmp_path / "warm")) == EXIT_OK
    assert run_entry(train, cfg(straight_dir)) == EXIT_OK
    with monkeypatch.context() as patch:
        stop_at(patch, "on_validation_epoch_start", 8, signal.SIGINT)
        assert run_entry(train, cfg(run_dir)) == EXIT_INTERRUPTED
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    assert not any(r[0] == 8 and "val/loss" in r[2] for r in rows(run_dir))  # stopped before it logged
    assert run_entry(train, cfg(run_dir)) == EXIT_OK  # the same command

    got, want = rows(run_dir), rows(straight_dir)
    assert [r[:2] for r in got] == [r[:2] for r in want]
    assert any(s == 8 and "val/loss" in x and "fid" in x for s, _, x in want)
    for (s, _, x), (_, _, y) in zip(got, want):
        assert x.keys() == y.keys(), s
        assert all(math.isclose(x[k], y[k], rel_tol=1e-5, abs_tol=1e-7) for k in x), (s, x, y)
    a, b = (json.loads((d / "results.json").read_text()) for d in (straight_dir, run_dir))
    assert a["status"] == b["status"] == "finished" and a["global_step"] == b["global_step"] == 8
    for k in ("val/loss", "fid", "fid/best", "fid/best_step"):
        assert math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-7), (k, a[k], b[k])

    # the straight run's last.ckpt (step 8's, written before its validation) still says it was due:
    # its finished results.json shows it ran, so the same command again does not run it twice
    assert torch.load(straight_dir / "checkpoints" / "last.ckpt", weights_only=True)["ncsn_progress"]["val_pending"]
    assert run_entry(train, cfg(straight_dir)) == EXIT_OK
    assert rows(straight_dir) == want and not (straight_dir / "metrics.dropped.csv").exists()
