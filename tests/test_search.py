"""Hyperparameter search (ncsn.workflow.search, conf/hparams_search/): search spaces as
documented, trial values as trained, stale trials found, and a search with a pruned trial that is
killed and resumed through the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, TINY_DIGITS
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from ncsn.workflow.search import OWNER, format_value, search_space, stale

CONFIG_PARAMS = yaml.safe_load((ROOT / "conf" / "hparams_search" / "digits_optuna.yaml").read_text())["hydra"][
    "sweeper"
]["params"]


def test_search_space_of_the_shipped_config_is_as_documented():
    space, fixed = search_space(CONFIG_PARAMS, [])
    assert fixed == []
    # range(4, 24, step=4) is Python's range: 24 is excluded (Hydra's Optuna plugin sampled it)
    assert space["sigmas.num_scales"] == IntDistribution(4, 20, step=4)
    assert space["sigmas.sigma_begin"] == FloatDistribution(0.5, 4.0, log=True)
    assert space["sampler.step_lr"] == FloatDistribution(3e-6, 6e-5, log=True)


def test_command_line_replaces_a_config_entry_and_fixed_overrides_pass_through():
    space, fixed = search_space(
        {"a.b": "interval(0, 1)", "c": "range(0.1, 0.45, step=0.1)"},
        ["a.b=choice(x,y)", "trainer.max_steps=3", "d=tag(int, interval(2, 9))"],
    )
    assert space["a.b"] == CategoricalDistribution(["x", "y"])
    assert space["c"].low == pytest.approx(0.1) and space["c"].high == pytest.approx(0.4) and space["c"].step == 0.1
    assert space["d"] == IntDistribution(2, 9)
    assert fixed == ["trainer.max_steps=3"]
    with pytest.raises(ValueError, match="unknown tags"):
        search_space({"a": "tag(shuffle, choice(1, 2))"}, [])
    with pytest.raises(ValueError, match="empty"):
        search_space({"a": "range(5, 5)"}, [])


def test_trial_values_are_rounded_as_trained():
    assert format_value(1.2066141432362034) == "1.207"
    assert format_value(3.1234567e-06) == "3.123e-06" and float(format_value(3.1234567e-06)) == 3.123e-06
    assert format_value(16) == "16" and format_value("x") == "x" and format_value(None) == "null"


def _running(owner: dict):
    return create_trial(state=TrialState.RUNNING, user_attrs={OWNER: owner})


def test_a_running_trial_is_stale_only_when_its_process_on_this_host_is_gone():
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert stale(_running({"host": host, "pid": dead.pid}), host)
    assert not stale(_running({"host": host, "pid": os.getpid()}), host)  # alive: another sweeper runs it
    assert not stale(_running({"host": "elsewhere", "pid": dead.pid}), host)  # another node's trial
    assert not stale(_running({}), host)


def _search_cmd(sweep_dir: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "-m",
        "hparams_search=digits_optuna",
        "hydra.sweeper.n_trials=4",
        "sampler.step_lr=choice(1e-9,5e-5)",  # 1e-9: the samples stay noise, a far worse FID
        "hydra.sweeper.pruner.n_startup_trials=1",
        *TINY_DIGITS,
        "fid.classifier_epochs=3",
        "eval.n_samples=16",
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={sweep_dir}",
    ]


@pytest.mark.slow
def test_search_prunes_a_trial_and_resumes_after_a_kill(tmp_path):
    """4 trials with median pruning; the search is SIGKILLed while trial 2 runs, then the same
    command finishes the study: trial 2 is run again in its own directory, trial 3 is new."""
    sweep = tmp_path / "sweep"
    cmd = _search_cmd(sweep, tmp_path / "cache")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    log1 = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 400
    while not (sweep / "2" / ".hydra" / "config.yaml").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal")))
    study = optuna.load_study(study_name="digits_noise_schedule", storage=storage)
    assert [t.state for t in study.trials][-1] == TrialState.RUNNING and len(study.trials) == 3

    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "trial 2 was left running by a process that is gone" in res.stdout + res.stderr
    study = optuna.load_study(study_name="digits_noise_schedule", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    states = {t.number: t.state for t in study.trials}
    assert set(states.values()) <= {TrialState.COMPLETE, TrialState.PRUNED}, (res.stdout + res.stderr)[-4000:]
    assert TrialState.PRUNED in states.values()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    values = {}
    for t in study.trials:
        results = json.loads((sweep / str(t.number) / "results.json").read_text())
        overrides = yaml.safe_load((sweep / str(t.number) / ".hydra" / "overrides.yaml").read_text())
        assert f"sampler.step_lr={format_value(t.params['sampler.step_lr'])}" in overrides
        if t.state == TrialState.PRUNED:
            assert results["status"] == "pruned" and results["global_step"] < 6
            assert t.params["sampler.step_lr"] == 1e-9  # the bad setting is the one stopped early
        else:
            assert results["status"] == "finished" and results["global_step"] == 6
            assert t.value == pytest.approx(results["fid/best"])
            values[t.number] = t.value
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(values.values()))
    assert best["trials"]["pruned"] == sum(s == TrialState.PRUNED for s in states.values())


def test_the_optuna_sweeper_is_recognised_by_its_target():
    """run_summary tells an Optuna job (which reports its objective) from other sweeps by the
    sweeper's exact ``_target_``: the one conf/hydra/sweeper/ncsn_optuna.yaml names and that imports."""
    import importlib

    from ncsn.workflow.run_summary import OPTUNA_SWEEPER

    conf = yaml.safe_load((ROOT / "conf" / "hydra" / "sweeper" / "ncsn_optuna.yaml").read_text())
    assert conf["_target_"] == OPTUNA_SWEEPER
    module, name = OPTUNA_SWEEPER.rsplit(".", 1)
    assert hasattr(importlib.import_module(module), name)
