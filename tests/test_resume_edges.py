"""Edges of resuming found by the soak (bench/soak.py): a model that ddp_spawn can pickle, a key
added to the repository since a run started, and a re-run of a finished run."""

from __future__ import annotations

import csv
import json
import logging
import pickle

import pytest
import torch
import yaml
from conftest import TINY_DIGITS, run_cli
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ncsn.nets.mlp import ConditionalMLP
from ncsn.training.optimizer import Adam
from ncsn.training.score_model import EmaUpdate, ScoreModel
from ncsn.workflow.config import ConfigError, record_run_config

SIGMAS = torch.tensor([1.0, 0.5, 0.1])


def test_model_with_ema_pickles_and_its_update_is_torchs():
    """ddp_spawn pickles the model: the default EMA must survive that, and update exactly as
    torch's get_ema_multi_avg_fn does (floats via foreach lerp, integers via the formula)."""
    torch.manual_seed(0)
    model = ScoreModel(ConditionalMLP(SIGMAS, dim=2, hidden=8, num_layers=1), optimizer=Adam(lr=1e-3), ema_decay=0.9)
    copy = pickle.loads(pickle.dumps(model))
    theirs = model.ema.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in copy.ema.state_dict().items()) and len(theirs) > 1
    for dtype in (torch.float32, torch.int64):
        ema = [torch.arange(6, dtype=dtype) * 3, torch.ones(4, dtype=dtype) * 7]
        cur = [torch.arange(6, dtype=dtype) * 5 - 4, torch.zeros(4, dtype=dtype)]
        mine, theirs = [t.clone() for t in ema], [t.clone() for t in ema]
        EmaUpdate(0.9)(mine, cur, 1)
        get_ema_multi_avg_fn(0.9)(theirs, cur, 1)
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs)), dtype
        assert not torch.equal(mine[0], ema[0])
    with pytest.raises(ValueError, match="decay"):
        EmaUpdate(1.5)


def test_key_added_since_the_run_started_is_no_change_at_its_default(tmp_path, caplog):
    """A saved config without a key the repository has since added resumes when the key is at its
    default (not set by an override), with one log line; set by an override, or any other changed
    value, the run directory is still refused."""
    saved = {"seed": 1, "fid": {"backend": "classifier"}}
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    now = {"seed": 1, "fid": {"backend": "classifier", "ci_bootstraps": 200}}
    with pytest.raises(ConfigError, match=r"fid.ci_bootstraps: '<absent>' -> 200"):
        record_run_config(tmp_path, now, ["fid.ci_bootstraps=200"], allow_change=False)
    with pytest.raises(ConfigError, match="seed: 1 -> 2"):
        record_run_config(tmp_path, {**now, "seed": 2}, ["seed=2"], allow_change=False)
    with caplog.at_level(logging.INFO, logger="ncsn.workflow.config"):
        assert record_run_config(tmp_path, now, ["seed=1"], allow_change=False)
    assert "fid.ci_bootstraps" in caplog.text
    assert yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text()) == now


@pytest.mark.slow
def test_rerun_of_a_finished_run_keeps_its_last_validation(tmp_path):
    """A finished run whose last step had a validation (last.ckpt is written before it), run again:
    nothing is trained or dropped; metrics.csv and results.json's val/loss stay as they were."""
    run_dir = tmp_path / "run"
    args = [*TINY_DIGITS, "fid=none", "callbacks.best=null", f"hydra.run.dir={run_dir}", "logger=csv"]
    first = run_cli("train.py", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = (run_dir / "metrics.csv").read_text()
    val = json.loads((run_dir / "results.json").read_text())["val/loss"]
    assert [r["step"] for r in csv.DictReader(rows.splitlines()) if r["val/loss"]] == ["3", "6"]
    again = run_cli("train.py", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not (run_dir / "metrics.dropped.csv").exists()
    assert (run_dir / "metrics.csv").read_text() == rows
    assert json.loads((run_dir / "results.json").read_text())["val/loss"] == val


def test_a_ddp_child_only_records_an_early_sigterm(monkeypatch):
    """A DDP child that got SIGTERM before training must still join the process group (rank 0
    waits for it there): its guard records the signal instead of raising; rank 0's raises."""
    import os
    import signal

    import pytest

    from ncsn.workflow.entry import Preempted, SigtermGuard
    from ncsn.workflow.ranks import is_run_dir_writer

    with pytest.raises(Preempted):
        with SigtermGuard([signal.SIGTERM], raising=True):
            pass
    with SigtermGuard([signal.SIGTERM], raising=False) as guard:
        assert guard.received and guard.was_received()
        os.kill(os.getpid(), signal.SIGTERM)  # another one during start-up: recorded, not raised
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_run_dir_writer()  # train() gives a child raising=False
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert is_run_dir_writer()
