"""Smoke runs of the benchmark scripts (bench/bench_*.py) in their --quick mode: each runs to the
end and prints its JSON lines (the numbers themselves are not checked: timings depend on the
machine). bench/common.py is their shared module; bench/sweep_samplers.py needs a checkpoint;
bench/pixel_stats.py is checked on a hand-made image."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT

SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("bench_*.py"))


def _run(script: str, *args: str, quick: bool = True) -> list[dict]:
    """The JSON lines ``bench/<script>`` prints (with ``--quick`` unless ``quick=False``)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *(["--quick"] if quick else []), *args],
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


@pytest.mark.slow
def test_device_check_quick_prints_every_phase_and_writes_its_json(tmp_path):
    out = tmp_path / "dc.json"
    res = subprocess.run(
        # a generous budget: on a busy 2-core machine the phases' soft budgets must not skip rows
        [sys.executable, str(ROOT / "bench" / "device_check.py"), "--quick", "--budget-s", "1200", "--out", str(out)],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device_info"]["device"] == "cpu" and result["quick"] is True
    assert result["pytest"]["status"] == "ok" and "test_speed.py" in " ".join(result["pytest"]["files"])
    assert result["sample"]["status"] == "ok" and result["train"]["status"] == "ok"
    # NFE per sample of each kind as experiment=ncsnv2_cifar10 configures it (232 levels, T = 5, denoising;
    # plain Langevin: conf/sampler/langevin.yaml's n_steps = 200 in all)
    nfe = {r["kind"]: r["nfe"] for r in result["sample"]["rows"]}
    expected = {"annealed": 232 * 5 + 1, "langevin": 200 + 1, "cas": 232, "pc": 2 * 232, "ode": 2 * 231 + 1}
    assert nfe == {**expected, "euler": 231 + 1, "edm": 2 * 231 + 1}
    for r in result["sample"]["rows"]:
        assert r["images_per_s"] > 0 and math.isclose(r["fid50k_s"], 50_000 / r["images_per_s"], rel_tol=1e-9)
        assert math.isclose(r["images_per_s"], 2 / (r["s_per_eval"] * r["nfe"]), rel_tol=1e-9)
    train = {r["variant"]: r for r in result["train"]["rows"]}
    assert list(train) == ["eager fp32", "bf16-mixed", "bf16+compile"] and "skipped" in train["bf16+compile"]
    for name in ("eager fp32", "bf16-mixed"):
        assert train[name]["timed_steps"] >= 1 and train[name]["images_per_s"] > 0
    # the printed tables: the device, one line per variant and per kind with its FID-50k time
    lines = res.stdout.splitlines()
    assert any(line.startswith("device: ") and result["device_info"]["device_name"] in line for line in lines)
    for kind, n in nfe.items():
        assert any(line.split()[:2] == [kind, str(n)] and line.endswith(" h") for line in lines), kind
    for name in ("eager fp32", "bf16-mixed"):
        assert any(line.strip().startswith(name) for line in lines), name


def test_pixel_stats_of_saved_samples_against_closed_form(tmp_path):
    """bench/pixel_stats.py on a 2x2 image saved as sample.py's fid_samples.npz (uint8, N x H x W x C)."""
    import numpy as np

    pixels = np.array([0, 255, 128, 5], dtype=np.uint8)
    np.savez(tmp_path / "fid_samples.npz", samples=pixels.reshape(1, 2, 2, 1))
    (row,) = _run("pixel_stats.py", str(tmp_path / "fid_samples.npz"), quick=False)
    x = pixels / 255.0
    assert row["n"] == 1 and row["at_0"] == row["at_1"] == row["near_0"] == 0.25 and row["near_1"] == 0.0
    assert row["mean"] == pytest.approx(x.mean(), abs=1e-4) and row["std"] == pytest.approx(x.std(), abs=1e-4)
    off = [128 / 255 - 8 / 16, 5 / 255 - 0.0]  # the inner pixels' distances to the nearest of 17 levels
    assert row["off_level_rms"] == pytest.approx(math.sqrt((off[0] ** 2 + off[1] ** 2) / 2), abs=1e-4)
