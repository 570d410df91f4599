"""Sweeps that can be re-run and extended: job directories keyed by their settings, finished jobs
skipped, a new seed added alone, a refused command that writes nothing, a resumed job that
continues its own W&B run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, TINY_DIGITS, run_cli
from hydra import compose, initialize_config_dir

from ncsn.workflow.sweep_jobs import MAX_NAME, job_key, shared_job_dir, skip_differences
from ncsn.workflow.wandb_run import previous_run_id

EXCLUDE = ["hydra.*", "paths", "logger", "trainer.devices"]


def test_job_key_is_the_settings_in_one_spelling_without_where_and_how():
    a = job_key(["seed=1", "optim.lr=1e-4", "sigmas.num_scales=10"], EXCLUDE)
    assert a == "optim.lr=0.0001,seed=1,sigmas.num_scales=10"
    # order, spelling of a number, paths, loggers and devices do not change the job
    same = ["sigmas.num_scales=10", "optim.lr=0.0001", "seed=1", "paths.output_root=/x/y", "logger=csv"]
    assert job_key([*same, "trainer.devices=2", "logger.wandb.mode=offline"], EXCLUDE) == a
    assert job_key(["seed=2", "optim.lr=1e-4", "sigmas.num_scales=10"], EXCLUDE) != a
    assert job_key(["model=ncsnv2", "+x.y=3"], EXCLUDE) == "model=ncsnv2,x.y=3"
    listed = job_key(["x.y=[1, 2]"], EXCLUDE)  # brackets and spaces: a safe prefix and a hash
    assert listed.startswith("x.y=_1,2-") and listed == job_key(["x.y=[1,2]"], EXCLUDE) != job_key(["x.y=[2,1]"])
    assert job_key([], EXCLUDE) == job_key(["paths.data_dir=d"], EXCLUDE) == "no_overrides"


def test_job_key_of_long_or_unsafe_settings_is_short_safe_and_distinct():
    long_a = [f"model.k{i}={i}" for i in range(40)] + ["seed=0"]
    long_b = [f"model.k{i}={i}" for i in range(40)] + ["seed=1"]
    unsafe = ["ckpt_path=/runs/a b/last.ckpt", "seed=0"]
    keys = [job_key(o, EXCLUDE) for o in (long_a, long_b, unsafe)]
    assert len(set(keys)) == 3
    for key in keys:
        assert len(key) <= MAX_NAME and "/" not in key and " " not in key
    assert keys[0].startswith("model.k0=0,model.k10=10") and keys[0] == job_key(list(reversed(long_a)), EXCLUDE)
    assert job_key(["ckpt_path=/runs/b/last.ckpt"], EXCLUDE) != job_key(["ckpt_path=/runs/c/last.ckpt"], EXCLUDE)


def test_sweep_subdir_is_the_job_key_and_optuna_trials_keep_their_number():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        plain = compose("train", overrides=[], return_hydra_config=True)
        search = compose("train", overrides=["hparams_search=digits_optuna"], return_hydra_config=True)
    assert "ncsn_job_key" in plain.hydra.sweep._get_node("subdir")._value()
    assert plain.hydra.sweeper._target_.endswith("NcsnBasicSweeper")
    assert search.hydra.sweep._get_node("subdir")._value() == "${hydra.job.num}"


def test_a_finished_job_is_the_same_whatever_its_paths_devices_or_logger_but_not_its_length():
    old = {"seed": 0, "paths": {"run_dir": "/a/0"}, "trainer": {"devices": 1, "max_steps": 6}, "logger": {}}
    moved = {"seed": 0, "paths": {"run_dir": "/b/0"}, "trainer": {"devices": 2, "max_steps": 6}, "logger": None}
    assert skip_differences(old, moved, EXCLUDE) == []
    assert skip_differences(old, {**moved, "seed": 1}, EXCLUDE) == ["seed"]
    longer = {**moved, "trainer": {"devices": 1, "max_steps": 12}}
    assert skip_differences(old, longer, EXCLUDE) == ["trainer.max_steps"]  # trains on: resumed, not skipped


def test_previous_run_id_is_the_first_wandb_run_of_the_directory(tmp_path):
    assert previous_run_id(tmp_path) is None
    for name in ("offline-run-20261201_101010-second1", "run-20261130_090000-first01", "latest-run", "debug.log"):
        (tmp_path / "wandb" / name).mkdir(parents=True)
    assert previous_run_id(tmp_path) == "first01"


def _jobs(sweep: Path) -> dict[str, Path]:
    """{seed: job directory} of a seed sweep."""
    out = {}
    for config in sweep.glob("*/.hydra/overrides.yaml"):
        seeds = [o.split("=")[1] for o in config.read_text().split() if o.startswith("seed=")]
        out[seeds[0]] = config.parent.parent
    return out


def _wandb_runs(job: Path) -> list[str]:
    return sorted(p.name for p in (job / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_rerun_skips_finished_jobs_extends_by_a_seed_resumes_and_refusals_write_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    args = [*TINY_DIGITS, "trainer.max_steps=3", "fid=none", "callbacks.best=null", "logger=default"]

    def sweep_cli(*extra):
        return run_cli("train.py", "-m", *args, *extra, f"hydra.sweep.dir={sweep}")

    res = sweep_cli("seed=0,1")
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = _jobs(sweep)
    assert sorted(jobs) == ["0", "1"] and all(j.parent == sweep for j in jobs.values())
    record = (sweep / "multirun.yaml").read_bytes()
    stamps = {s: (j / "samples" / "final.png").stat().st_mtime_ns for s, j in jobs.items()}
    results = {s: (j / "results.json").read_bytes() for s, j in jobs.items()}
    runs = {s: _wandb_runs(j) for s, j in jobs.items()}
    assert all(len(r) == 1 for r in runs.values())

    # the same command again: both jobs skipped, one line each, nothing redrawn, no new W&B run
    res = sweep_cli("seed=0,1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("finished, skipped:") == 2 and "── train.py finished ──" not in res.stdout
    for s, j in jobs.items():
        assert (j / "samples" / "final.png").stat().st_mtime_ns == stamps[s]
        assert (j / "results.json").read_bytes() == results[s] and _wandb_runs(j) == runs[s]

    # seed=0,1,2: only the seed-2 job runs
    res = sweep_cli("seed=0,1,2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("finished, skipped:") == 2 and res.stdout.count("── train.py finished ──") == 1
    jobs = _jobs(sweep)
    assert sorted(jobs) == ["0", "1", "2"]
    assert json.loads((jobs["2"] / "results.json").read_text())["status"] == "finished"
    for s in ("0", "1"):
        assert (jobs[s] / "samples" / "final.png").stat().st_mtime_ns == stamps[s]
    record = (sweep / "multirun.yaml").read_bytes()
    assert b"seed=0,1,2" in record  # the accepted command's record

    # a refused command (a bad value): exit 2, multirun.yaml byte-identical, no new directory
    before = sorted(p.name for p in sweep.iterdir())
    res = sweep_cli("seed=0,1", "optim.lr=-1")
    assert res.returncode == 2 and "optim.lr=-1" in res.stderr
    assert (sweep / "multirun.yaml").read_bytes() == record
    assert sorted(p.name for p in sweep.iterdir()) == before
    res = sweep_cli("seed=0", "trainer.max_steps=3,4")  # two jobs, one directory: refused before any job
    assert res.returncode == 2 and "would share one job directory" in res.stderr
    assert (sweep / "multirun.yaml").read_bytes() == record and sorted(p.name for p in sweep.iterdir()) == before

    # an unfinished job (preempted) resumes and continues its own W&B run (same id)
    done = json.loads(results["1"])
    (jobs["1"] / "results.json").write_text(json.dumps({**done, "status": "preempted"}))
    res = sweep_cli("seed=0,1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("finished, skipped:") == 1
    again = _wandb_runs(jobs["1"])
    assert len(again) == 2 and {r.rsplit("-", 1)[1] for r in again} == {runs["1"][0].rsplit("-", 1)[1]}
    assert json.loads((jobs["1"] / "results.json").read_text())["status"] == "finished"
    assert _wandb_runs(jobs["0"]) == runs["0"]


def test_a_sweep_whose_jobs_would_share_a_directory_is_refused():
    exclude = ["trainer.max_steps", "trainer.devices"]
    assert shared_job_dir([["seed=0"], ["seed=1"]], exclude) is None
    why = shared_job_dir([["seed=0", "trainer.max_steps=10"], ["seed=0", "trainer.max_steps=20"]], exclude)
    assert "jobs #0 and #1" in why and "trainer.max_steps" in why and "hydra.sweep.dir" in why
