"""Smoke runs of the benchmark scripts (bench/bench_*.py) in their --quick mode: each runs to the
end and prints its JSON lines (the numbers themselves are not checked: timings depend on the
machine). bench/common.py is their shared module; bench/sweep_samplers.py needs a checkpoint."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))


def _run(script: str, *args: str) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert lines, res.stdout[-2000:]
    return lines


def test_every_bench_script_is_smoke_run():
    assert SCRIPTS == ["bench_dataloader.py", "bench_sampling.py", "bench_train.py"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "script, rate", [("bench_train.py", "images_per_s"), ("bench_sampling.py", "evals_x_images_per_s")]
)
def test_speed_bench_quick_reports_every_default_option(script, rate):
    lines = _run(script, "--threads", "1")
    options = [r["option"] for r in lines]
    assert options[0] == "baseline" and len(options) >= 2 and len(set(options)) == len(options)
    for r in lines:
        assert r["ngf"] == 8 and r["batch"] == 4 and r["timed_iters"] == 1
        assert math.isfinite(r[rate]) and r[rate] > 0, r
    assert lines[0]["ratio_to_baseline"] == 1.0


@pytest.mark.slow
def test_dataloader_bench_quick_reads_a_synthetic_cifar10():
    (line,) = _run("bench_dataloader.py")
    assert line["synthetic"] is True and line["workers"] == 0 and line["batches"] == 2 and line["batch_size"] == 16
    assert line["images_per_s"] > 0
