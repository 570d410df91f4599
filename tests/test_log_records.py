"""Records that tell what happened: <job>.log holds every FID evaluation and the end-of-run summary
as plain text; the console shows no meaningless progress-bar or model-summary fields."""

import csv

import pytest
from conftest import TINY_DIGITS, run_cli

from ncsn.workflow.console import plain_text
from ncsn.workflow.run_summary import plural


def test_plain_text_drops_carriage_returns_and_terminal_codes():
    assert plain_text("10%\r50%\r100%") == "100%"
    assert plain_text("\x1b[1;31mred\x1b[0m done\r\nnext") == "red done\nnext"
    assert plural(1, "grid") == "1 grid" and plural(0, "grid") == "0 grids" and plural(2, "file") == "2 files"


@pytest.mark.slow
def test_train_log_holds_fid_evaluations_and_the_summary(tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(
        "train.py",
        *TINY_DIGITS,
        "trainer.max_steps=3",  # one epoch of 3 batches: one evaluation, one grid
        "trainer.enable_progress_bar=true",
        "trainer.enable_model_summary=true",
        "fid.classifier_epochs=2",
        "eval.n_samples=20",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    text = (run_dir / "train.log").read_text()
    assert "\r" not in text and "\x1b" not in text
    with open(run_dir / "metrics.csv", newline="") as f:
        evaluations = [row for row in csv.DictReader(f) if row.get("fid")]
    fid_lines = [line for line in text.splitlines() if "20 samples: fid " in line]
    assert len(fid_lines) == len(evaluations) == 1, fid_lines
    assert f"fid {float(evaluations[0]['fid']):.4g}" in fid_lines[0] and "step 3 (epoch 0)" in fid_lines[0]
    assert "── train.py finished" in text and "FID            best" in text and "(final.png, 1 grid)" in text
    assert "Total params" in text  # the model summary is logged, in the file too
    console = res.stdout + res.stderr
    for noise in ("/-2", "v_num", "Total FLOPs", "Total Flops", "1 grids", "Trainer already configured"):
        assert noise not in console, noise
    assert "Epoch 0" in console  # the progress bar ran
    # sample.py: its sample.log holds the summary, even with no log line before it
    out = tmp_path / "sampled"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    res = run_cli("sample.py", f"ckpt_path={ckpt}", "sampler.n_samples=4", "device=cpu", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr[-3000:]
    text = (out / "sample.log").read_text()
    assert "── sample.py finished" in text and "\r" not in text and "\x1b" not in text
