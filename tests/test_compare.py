"""ncsn.compare on a fake Hydra multirun directory."""

import csv
import json

import pytest
import yaml

from ncsn.compare import compare, find_jobs, flatten, main, varying_keys


def _job(root, name, num_scales, seed, results=None, log=None, model="mlp", metrics_rows=None):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    cfg = {
        "seed": seed,
        "sigmas": {"kind": "geometric", "sigma_begin": 1.0, "sigma_end": 0.01, "num_scales": num_scales},
        "model": {"name": model, "hidden": 64 if model == "mlp" else 32},
        "paths": {"output_dir": str(d)},
        "trainer": {"max_steps": 100, "default_root_dir": str(d)},
        "data": {"sizes": [1, 2]},
    }
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump([f"sigmas.num_scales={num_scales}", f"seed={seed}", f"model={model}"])
    )
    if results is not None:
        (d / "results.json").write_text(json.dumps(results))
    if log is not None:
        (d / "train.log").write_text(log)
    if metrics_rows:
        with (d / "metrics.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["epoch", "step", "train/loss", "val/loss"])
            w.writerows(metrics_rows)
    return d


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    _job(root, "0", 10, 0, {"val/loss": 1.5, "fid": 40.0, "fid/no_denoise": 45.0, "status": "finished"})
    _job(root, "1", 20, 0, {"val/loss": 1.2, "fid": 30.5, "fid/no_denoise": 35.0, "status": "finished"})
    _job(root, "sub/2", 10, 1, {"val/loss": 1.4, "fid": 35.25, "status": "finished"})  # nested deeper
    _job(
        root,
        "3",
        20,
        1,
        None,
        log="[INFO] epoch 0\n[ERROR] CUDA out of memory\n\n",
        metrics_rows=[[0, 49, 2.0, ""], [0, 99, "", 1.9]],
    )
    return root


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}


def test_finds_jobs_and_varying_keys(sweep):
    jobs = find_jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "3", "sub/2"]
    # paths / *_dir keys differ per job but are not settings; constant keys are not listed
    assert varying_keys(jobs) == ["sigmas.num_scales", "seed"]


def test_table_sorted_by_fid_with_unfinished_last(sweep):
    c = compare(sweep)
    assert c.metric == "fid"
    assert [r["job"] for r in c.rows] == ["1", "sub/2", "0", "3"]
    assert c.columns == ["job", "sigmas.num_scales", "seed", "fid", "fid/no_denoise", "val/loss", "status"]
    assert c.rows[0]["sigmas.num_scales"] == 20 and c.rows[0]["fid"] == 30.5
    assert c.rows[-1]["status"] == "unfinished" and c.rows[-1]["fid"] is None
    assert [j.name for j in c.unfinished] == ["3"]
    assert "CUDA out of memory" in c.unfinished[0].note and "step 99" in c.unfinished[0].note


def test_metric_choice(sweep):
    c = compare(sweep, metric="val/loss")
    assert [r["job"] for r in c.rows] == ["1", "sub/2", "0", "3"]
    c = compare(sweep, metric="val/loss", descending=True)
    assert [r["job"] for r in c.rows] == ["0", "sub/2", "1", "3"]
    for j in ("0", "1", "sub/2"):  # without any fid the default is val/loss
        res = json.loads((sweep / j / "results.json").read_text())
        res.pop("fid")
        (sweep / j / "results.json").write_text(json.dumps(res))
    assert compare(sweep).metric == "val/loss"


def test_group_choice_folds_its_keys(tmp_path):
    _job(tmp_path, "0", 10, 0, {"val/loss": 1.0}, model="mlp")
    _job(tmp_path, "1", 10, 0, {"val/loss": 2.0}, model="small_conv")
    assert varying_keys(find_jobs(tmp_path)) == ["model"]  # not model.name / model.hidden


def test_cli_writes_files_and_prints_table(sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (out / "compare.md").read_text()
    assert md in printed
    assert "| job | sigmas.num_scales | seed | fid | fid/no_denoise | val/loss | status |" in md
    assert "| 1 | 20 | 0 | 30.5 | 35 | 1.2 | finished |" in md
    assert md.index("\n| 1 |") < md.index("\n| sub/2 |") < md.index("\n| 0 |") < md.index("\n| 3 |")
    assert "## Unfinished or failed jobs" in md and "`3`: unfinished" in md and "CUDA out of memory" in md
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["job"] for r in rows] == ["1", "sub/2", "0", "3"]
    assert rows[2]["fid"] == "40.0" and rows[3]["fid"] == "" and rows[3]["status"] == "unfinished"
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_out_is_sweep_dir_and_broken_jobs_do_not_crash(sweep, capsys):
    (sweep / "4" / ".hydra").mkdir(parents=True)
    (sweep / "4" / ".hydra" / "config.yaml").write_text("seed: [unclosed\n")
    _job(sweep, "5", 10, 2, None)
    (sweep / "5" / "results.json").write_text('{"fid": 3')  # truncated write
    _job(sweep, "6", 10, 3, {"fid": 1.0, "status": "failed"})
    assert main([str(sweep)]) == 0
    md = (sweep / "compare.md").read_text()
    assert "`4`: unreadable config" in md and "`5`: bad results.json" in md and "`6`: failed" in md
    assert (sweep / "compare.csv").is_file() and (sweep / "compare.png").is_file()


def test_empty_and_unfinished_only(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    _job(tmp_path, "0", 10, 0, None)
    assert main([str(tmp_path)]) == 0
    assert not (tmp_path / "compare.png").exists()
    assert "no plot" in capsys.readouterr().out
