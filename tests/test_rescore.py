"""Re-scoring a training sweep (sample.py mode=rescore) and held-out bits/dim during training
(callbacks.val_bpd): through the CLI on a tiny sigma-continuous digits sweep (slow), and compare's
use of re-scores on fake job directories (fast)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TINY_DIGITS, job_dirs, run_cli
from omegaconf import OmegaConf

from ncsn.compare import compare, main
from ncsn.workflow.config import ConfigError
from ncsn.workflow.rescore import validate_rescore

TAG = "best-n30-bpd"
RESCORE = [
    "mode=rescore",
    "rescore.checkpoint=best",
    "eval.n_samples=30",
    "rescore.bpd=true",
    "nll.n_images=8",
    "nll.batch_size=8",
    "nll.num_steps=4",
    "device=cpu",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """train.py -m sigmas.num_scales=3,5 seed=0,1 of a sigma-continuous net with val/bpd on, in a
    sweep directory whose path holds '=' and ',' (as its job directories do)."""
    tmp = tmp_path_factory.mktemp("rescore")
    sweep = tmp / "abl=L,seed"
    res = run_cli(
        "train.py",
        "-m",
        *TINY_DIGITS,
        "trainer.max_steps=3",
        "model.conditioning=sigma",
        "sigmas.num_scales=3,5",
        "seed=0,1",
        "fid.classifier_epochs=2",
        f"paths.cache_dir={tmp / 'cache'}",
        "eval.n_samples=20",
        "callbacks.val_bpd.every_n_epochs=1",
        "callbacks.val_bpd.n_images=8",
        "callbacks.val_bpd.num_steps=4",
        f"hydra.sweep.dir='{sweep}'",
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return sweep


def _training_records(sweep: Path) -> dict:
    """SHA-256 of every file of every job, except its rescore/ folder."""
    out = {}
    for job in job_dirs(sweep):
        for p in sorted(job.rglob("*")):
            if p.is_file() and "rescore" not in p.relative_to(job).parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _rescore_cli(sweep: Path, *extra: str) -> list[str]:
    return [str(ROOT / "sample.py"), *RESCORE, f"rescore.sweep_dir='{sweep}'", *extra]


@pytest.mark.slow
def test_val_bpd_logged_in_training_finite_and_positive(sweep):
    for job in job_dirs(sweep):
        with (job / "metrics.csv").open(newline="") as f:
            values = [float(r["val/bpd"]) for r in csv.DictReader(f) if r["val/bpd"]]
        assert len(values) == 1 and all(math.isfinite(v) and v > 0 for v in values)
        results = json.loads((job / "results.json").read_text())
        assert results["val/bpd"] == pytest.approx(values[-1]) and results["val/bpd_se"] > 0


@pytest.mark.slow
def test_val_bpd_refused_at_start_up_for_a_level_conditioned_net(tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(
        "train.py",
        *TINY_DIGITS,
        "fid=none",
        "callbacks.best=null",
        "model.conditioning=level",
        "callbacks.val_bpd.every_n_epochs=1",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: callbacks.val_bpd.every_n_epochs=1 is invalid")
    assert "sigma-continuous" in lines[0]
    assert not (run_dir / "checkpoints").exists() and not (run_dir / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
def test_rescore_writes_beside_each_job_continues_after_a_kill_and_compare_uses_it(sweep, tmp_path):
    records = _training_records(sweep)
    jobs = job_dirs(sweep)
    assert len(jobs) == 4 and all("=" in j.name and "," in j.name for j in jobs)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")

    # killed (SIGKILL) once the first job's re-score is complete
    first = lambda: [j for j in jobs if (j / "rescore" / TAG / "results.json").is_file()]  # noqa: E731
    proc = subprocess.Popen(
        [sys.executable, *_rescore_cli(sweep, f"hydra.run.dir={tmp_path / 'killed'}")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not first() and proc.poll() is None:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = first()
    assert 1 <= len(done) < 4, "the kill came after every job was re-scored"
    kept = {j: (j / "rescore" / TAG / "results.json").stat().st_mtime_ns for j in done}

    # the same command again: continues (the done jobs skipped, the rest scored, no partial folder left)
    res = run_cli("sample.py", *_rescore_cli(sweep, f"hydra.run.dir={tmp_path / 'again'}")[1:])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("already re-scored") == len(done), res.stdout[-3000:]
    summary = json.loads((tmp_path / "again" / "results.json").read_text())
    assert sorted(summary["jobs"].values()) == sorted(["skipped"] * len(done) + ["re-scored"] * (4 - len(done)))
    for j, stamp in kept.items():
        assert (j / "rescore" / TAG / "results.json").stat().st_mtime_ns == stamp
    for j in jobs:
        folder = j / "rescore" / TAG
        r = json.loads((folder / "results.json").read_text())
        assert r["status"] == "finished" and r["n_samples"] == 30 and r["checkpoint"] == "best"
        assert r["global_step"] == 3 and r["ckpt_path"] == str(j / "checkpoints" / "best.ckpt")
        assert all(math.isfinite(r[k]) for k in ("fid", "kid", "kid_std", "fid_ci_low", "fid_ci_high", "bpd"))
        assert r["fid_ci_low"] <= r["fid"] <= r["fid_ci_high"] and r["bpd"] > 0
        assert (folder / "samples.png").is_file() and "fid" in (folder / "rescore.log").read_text()
        assert not [p for p in (j / "rescore").iterdir() if p.name.startswith(".")]  # no partial folder
    assert _training_records(sweep) == records  # metrics.csv, results.json, checkpoints, .hydra: untouched

    # compare: grouped by the training settings, seeds aggregated, the re-scored values in the table
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    c = compare(sweep)
    assert c.rescore["tag"] == TAG and c.group_keys == ["sigmas.num_scales"] and c.metric == "fid" and c.single
    for g in c.groups:
        scores = [json.loads((j.path / "rescore" / TAG / "results.json").read_text()) for j in g.jobs]
        assert g.stats["fid"][2] == 2 and g.stats["fid"][0] == pytest.approx(sum(s["fid"] for s in scores) / 2)
        assert g.stats["bpd"][0] == pytest.approx(sum(s["bpd"] for s in scores) / 2)
    md = (out / "compare.md").read_text()
    assert "Re-scored with 30 samples, best checkpoint" in md
    head = next(ln for ln in md.splitlines() if ln.startswith("| sigmas.num_scales | n | fid |"))
    assert all(f"| {k} |" in head for k in ("kid", "bpd", "val/bpd"))
    assert md.count(f'rescore/{TAG}/samples.png"><img') == 4 and "training fid/best" in md

    # a re-run with other settings under the same tag is refused, nothing written
    res = run_cli(
        "sample.py", *_rescore_cli(sweep, "seed=1", "rescore.tag=" + TAG, f"hydra.run.dir={tmp_path / 'x'}")[1:]
    )
    assert res.returncode == 2 and "holds a re-score with other settings (seed)" in res.stderr
    assert _training_records(sweep) == records

    # more held-out images than the split has: refused before any job is scored (nothing written)
    res = run_cli(
        "sample.py",
        *_rescore_cli(sweep, "nll.n_images=100000", "rescore.tag=big", f"hydra.run.dir={tmp_path / 'y'}")[1:],
    )
    assert res.returncode == 2 and "nll.n_images=100000 is invalid: the 'val' split has" in res.stderr
    assert not list(sweep.glob("*/rescore/*big*")) and _training_records(sweep) == records


@pytest.mark.slow
def test_rescore_refuses_a_directory_without_train_jobs_in_one_line(tmp_path):
    target = tmp_path / "not=a,sweep"
    (target / "job" / ".hydra").mkdir(parents=True)
    (target / "job" / ".hydra" / "config.yaml").write_text("ckpt_path: x.ckpt\nmode: fid\n")  # a sample.py job
    res = run_cli("sample.py", "mode=rescore", f"rescore.sweep_dir='{target}'", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: rescore.sweep_dir='{target}' is invalid")
    assert "no train.py job directory" in lines[0] and not (target / "job" / "rescore").exists()


def _sample_cfg(**rescore):
    cfg = OmegaConf.load(ROOT / "conf" / "sample.yaml")
    cfg.merge_with({"mode": "rescore", "rescore": rescore})
    return cfg


def test_rescore_keys_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^rescore.sweep_dir='.*nothing=here,x' does not exist$"):
        validate_rescore(_sample_cfg(sweep_dir=str(tmp_path / "nothing=here,x")))
    with pytest.raises(ConfigError, match=r"^rescore.checkpoint='top' is invalid: must be 'best' or 'last'$"):
        validate_rescore(_sample_cfg(sweep_dir=str(tmp_path), checkpoint="top"))
    with pytest.raises(ConfigError, match=r"^rescore.tag='a/b' is invalid"):
        validate_rescore(_sample_cfg(sweep_dir=str(tmp_path), tag="a/b"))
    cfg = _sample_cfg(sweep_dir=str(tmp_path))
    cfg.ckpt_path = "x.ckpt"
    with pytest.raises(ConfigError, match=r"^ckpt_path='x.ckpt' is invalid with mode=rescore"):
        validate_rescore(cfg)
    assert validate_rescore(_sample_cfg(sweep_dir=str(tmp_path))) == tmp_path


# -- compare on fake job directories (fast) ---------------------------------------------------------
def _fake_job(sweep: Path, num_scales: int, seed: int, train_fid: float, rescored: dict | None) -> Path:
    job = sweep / f"seed={seed},sigmas.num_scales={num_scales}"
    (job / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "sigmas": {"num_scales": num_scales}, "trainer": {"max_steps": 10}, "model": {"ngf": 8}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}", f"sigmas.num_scales={num_scales}"]))
    (job / "results.json").write_text(json.dumps({"status": "finished", "fid": train_fid, "fid/best": train_fid}))
    (job / "metrics.csv").write_text(f"step,fid,val/loss\n5,{train_fid + 1},2.0\n10,{train_fid},1.0\n")
    for tag, fid in (rescored or {}).items():
        (job / "rescore" / tag).mkdir(parents=True)
        r = {"status": "finished", "fid": fid, "kid": fid / 10, "n_samples": 2000, "checkpoint": "last"}
        (job / "rescore" / tag / "results.json").write_text(json.dumps(r))
    return job


def test_compare_uses_the_rescore_most_jobs_have_and_keeps_training_values_apart(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 3, 0, 50.0, {"last-n2000": 30.0, "last-n500": 1.0})
    _fake_job(sweep, 3, 1, 60.0, {"last-n2000": 34.0})
    _fake_job(sweep, 5, 0, 10.0, {"last-n2000": 40.0})
    _fake_job(sweep, 5, 1, 12.0, None)  # not re-scored: out of the ablation table, not mixed in
    partial = sweep / "seed=0,sigmas.num_scales=5" / "rescore" / ".last-n2000.partial-123"
    partial.mkdir()
    (partial / "results.json").write_text(json.dumps({"status": "finished", "fid": -1.0}))  # a killed one's: unread
    c = compare(sweep)
    assert c.rescore["tag"] == "last-n2000" and c.rescore["missing"] == ["seed=1,sigmas.num_scales=5"]
    assert c.single and [
        (g.settings["sigmas.num_scales"], g.stats["fid"][:1], g.stats["fid"][2]) for g in c.groups
    ] == [
        (3, (32.0,), 2),
        (5, (40.0,), 1),
    ]
    row = next(r for r in c.rows if r["job"] == "seed=0,sigmas.num_scales=3")
    assert row["fid"] == 30.0 and row["training fid"] == 50.0 and row["training fid/best"] == 50.0
    assert main([str(sweep)]) == 0
    md = (sweep / "compare.md").read_text()
    assert "Re-scored with 2000 samples, last checkpoint (`rescore/last-n2000`" in md
    assert "Not re-scored (left out of the ablation table): `seed=1,sigmas.num_scales=5`" in md
    # --rescore none: the training runs' values (best over metrics.csv); an unknown tag: one line, exit 2
    c = compare(sweep, rescore="none")
    assert c.rescore is None and not c.single and c.groups[0].stats["best fid"][0] == 11.0
    capsys.readouterr()
    assert main([str(sweep), "--rescore", "best-n9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--rescore='best-n9'" in err[0] and "last-n2000, last-n500" in err[0]
