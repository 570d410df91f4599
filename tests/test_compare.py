"""ncsn.compare: on a fake Hydra multirun directory (fast), then on real train.py and sample.py
sweeps of tiny digits runs (slow)."""

import csv
import json
import math

import pytest
import yaml
from conftest import TINY_DIGITS, run_cli, sweep_job

from ncsn.compare import compare, find_jobs, main, plot, plot_nfe, plot_search, varying_keys
from ncsn.compare.plots import is_search
from ncsn.core.checks import flatten


def _job(root, name, num_scales, seed, results=None, log=None, model="mlp", metrics_rows=None, loss_by_sigma=None):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    cfg = {
        "seed": seed,
        "sigmas": {"kind": "geometric", "sigma_begin": 1.0, "sigma_end": 0.01, "num_scales": num_scales},
        "model": {"name": model, "hidden": 64 if model == "mlp" else 32, "num_classes": num_scales},
        "paths": {"output_dir": str(d)},
        "trainer": {"max_steps": 100, "default_root_dir": str(d)},
        "data": {"sizes": [1, 2]},
        # path-valued keys: never settings (a *dirpath key, a value inside the job directory)
        "callbacks": {
            "checkpoint": {"dirpath": str(d / "checkpoints")},
            "samples": {"seed": seed, "save_to": str(d / "samples" / "grid.png")},
        },
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
            w.writerow(["epoch", "step", "train/loss", "val/loss", "fid"])
            w.writerows(metrics_rows)
    if loss_by_sigma:
        with (d / "val_loss_by_sigma.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "level", "sigma", "loss", "n_images"])
            w.writerows(loss_by_sigma)
    return d


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "2025-01-01" / "12-00-00"
    _job(
        root,
        "0",
        10,
        0,
        {"val/loss": 1.5, "fid": 40.0, "fid/no_denoise": 45.0, "status": "finished"},
        metrics_rows=[[0, 9, "", 1.7, 38.0], [1, 19, "", 1.5, 40.0]],  # best 38 at step 9, final 40
        loss_by_sigma=[[9, 0, 1.0, 30.0, 8], [9, 1, 0.01, 20.0, 8], [19, 0, 1.0, 25.0, 8], [19, 1, 0.01, 15.0, 8]],
    )
    _job(root, "1", 20, 0, {"val/loss": 1.2, "fid": 30.5, "fid/no_denoise": 35.0, "status": "finished"})
    _job(
        root,
        "sub/2",
        10,
        1,
        {"val/loss": 1.4, "fid": 35.25, "status": "finished"},  # nested deeper
        loss_by_sigma=[[19, 0, 1.0, 27.0, 8], [19, 1, 0.01, 17.0, 8]],
    )
    _job(
        root,
        "3",
        20,
        1,
        None,
        log="[INFO] epoch 0\n[ERROR] CUDA out of memory\n\n",
        metrics_rows=[[0, 49, 2.0, "", ""], [0, 99, "", 1.9, ""]],
    )
    return root


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1], "e": {}}


def test_finds_jobs_and_varying_keys(sweep):
    jobs = find_jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "3", "sub/2"]
    # paths (*dir, *dirpath, values inside a job directory) differ per job but are not settings;
    # mirrors (callbacks.samples.seed = seed, model.num_classes = num_scales) are not second settings
    assert varying_keys(jobs, sweep_dir=sweep) == ["sigmas.num_scales", "seed"]
    # a moved sweep: the recorded absolute paths no longer exist, "<sweep name>/<job>" still names them
    assert varying_keys(jobs, sweep_dir=sweep.parent.parent.parent / "elsewhere" / "12-00-00") == [
        "sigmas.num_scales",
        "seed",
    ]


def test_best_and_final_and_seed_groups(sweep):
    c = compare(sweep)
    assert c.metric == "fid"
    assert c.columns[:6] == ["job", "sigmas.num_scales", "seed", "best fid", "best fid step", "final fid"]
    assert "fid/no_denoise" in c.columns and "val/loss" in c.columns and c.columns[-1] == "status"
    assert not [k for k in c.columns if "dir" in k or "save_to" in k]
    # jobs sorted by their best FID (job 0: min over metrics.csv = 38 at step 9; final 40)
    assert [r["job"] for r in c.rows] == ["1", "sub/2", "0", "3"]
    row0 = next(r for r in c.rows if r["job"] == "0")
    assert (row0["best fid"], row0["best fid step"], row0["final fid"]) == (38.0, 9, 40.0)
    assert c.rows[-1]["status"] == "unfinished" and c.rows[-1]["best fid"] is None
    assert "CUDA out of memory" in c.unfinished[0].note and "step 99" in c.unfinished[0].note
    # seeds aggregated: one group per num_scales, sorted by the mean best FID
    assert c.group_keys == ["sigmas.num_scales"]
    assert [g.settings for g in c.groups] == [{"sigmas.num_scales": 20}, {"sigmas.num_scales": 10}]
    mean, std, n = c.groups[1].stats["best fid"]
    assert n == 2 and mean == pytest.approx((38.0 + 35.25) / 2) and std == pytest.approx(math.sqrt(2) * 1.375)
    assert c.groups[0].stats["best fid"] == (30.5, None, 1)  # job 3 did not finish
    assert c.groups[1].steps == [9, None]  # job sub/2 has no metrics.csv: its only value is results.json's


def test_metric_choice(sweep):
    c = compare(sweep, metric="val/loss")
    assert [r["job"] for r in c.rows] == ["1", "sub/2", "0", "3"]
    c = compare(sweep, metric="val/loss", descending=True)
    assert [r["job"] for r in c.rows] == ["0", "sub/2", "1", "3"]
    assert c.rows[0]["best val/loss"] == 1.7  # the largest over job 0's evaluations
    (sweep / "0" / "metrics.csv").unlink()
    for j in ("0", "1", "sub/2"):  # without any fid the default is val/loss
        res = json.loads((sweep / j / "results.json").read_text())
        res.pop("fid")
        (sweep / j / "results.json").write_text(json.dumps(res))
    assert compare(sweep).metric == "val/loss"


def test_group_choice_folds_its_keys(tmp_path):
    _job(tmp_path, "0", 10, 0, {"val/loss": 1.0}, model="mlp")
    _job(tmp_path, "1", 10, 0, {"val/loss": 2.0}, model="small_conv")
    assert varying_keys(find_jobs(tmp_path), sweep_dir=tmp_path) == ["model"]  # not model.name / model.hidden


def test_cli_writes_report_with_groups_grids_and_plots(sweep, tmp_path, capsys):
    (sweep / "0" / "samples").mkdir()
    (sweep / "0" / "samples" / "final.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    md = (out / "compare.md").read_text()
    assert md in printed
    # val/loss depends on the schedule this sweep varies: out of the ablation table, said in words
    assert "| sigmas.num_scales | n | best fid | at step | final fid | fid/no_denoise | samples |" in md
    assert "Not in this table (`val/loss`)" in md
    assert "| 20 | 1 | 30.5 | - | 30.5 | 35 |  |" in md
    assert "| 10 | 2 | 36.62 ± 1.9 | 9, - | 37.62 ± 3.4 | 45 |" in md
    assert md.index("\n| 20 | 1 |") < md.index("\n| 10 | 2 |")
    # the final sample grid beside its row, at full size, linked, relative to the report
    grid = "../multirun/2025-01-01/12-00-00/0/samples/final.png"
    assert f'<a href="{grid}"><img src="{grid}" alt="seed 0"' in md and "width=" not in md
    # the ablation table also as CSV (mean and std columns) and LaTeX (booktabs)
    table = list(csv.DictReader((out / "table.csv").open()))
    assert [r["sigmas.num_scales"] for r in table] == ["20", "10"] and "val/loss mean" not in table[0]
    assert float(table[1]["best fid mean"]) == pytest.approx(36.625) and table[1]["n"] == "2"
    assert float(table[1]["best fid std"]) == pytest.approx(math.sqrt(2) * 1.375) and table[0]["best fid std"] == ""
    tex = (out / "table.tex").read_text()
    assert tex.startswith("\\begin{tabular}{lrrrrr}\n\\toprule\n") and "\\bottomrule\n\\end{tabular}" in tex
    assert "sigmas.num\\_scales & n & best fid & at step & final fid & fid/no\\_denoise \\\\" in tex
    assert "10 & 2 & 36.62 $\\pm$ 1.9 & 9, - & 37.62 $\\pm$ 3.4 & 45 \\\\" in tex
    assert "![" in md and "(compare.png)" in md and "(loss_by_sigma.png)" in md
    assert "## Every job" in md and "| job | sigmas.num_scales | seed | best fid | best fid step | final fid |" in md
    assert "## Unfinished or failed jobs" in md and "`3`: unfinished" in md and "CUDA out of memory" in md
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["job"] for r in rows] == ["1", "sub/2", "0", "3"]
    assert rows[2]["best fid"] == "38.0" and rows[2]["final fid"] == "40.0" and rows[3]["best fid"] == ""
    for name in ("compare.png", "loss_by_sigma.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_python_dash_m_ncsn_compare_runs_the_package_cli(sweep, tmp_path):
    """``python -m ncsn.compare`` (the package's __main__) writes the report and exits 0; a missing
    or empty sweep directory is one ``error:`` line, exit 2."""
    import subprocess
    import sys

    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "ncsn.compare"]
    res = subprocess.run([*cmd, str(sweep), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "compare.md").read_text() in res.stdout
    (tmp_path / "empty").mkdir()
    for bad, message in ((tmp_path / "nope", "does not exist"), (tmp_path / "empty", "no job directories")):
        res = subprocess.run([*cmd, str(bad)], capture_output=True, text=True)
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1, res.stderr
        assert str(bad) in res.stderr and message in res.stderr


def test_default_out_is_sweep_dir_and_broken_jobs_do_not_crash(sweep, capsys):
    (sweep / "4" / ".hydra").mkdir(parents=True)
    (sweep / "4" / ".hydra" / "config.yaml").write_text("seed: [unclosed\n")
    _job(sweep, "5", 10, 2, None)
    (sweep / "5" / "results.json").write_text('{"fid": 3')  # truncated write
    _job(sweep, "6", 10, 3, {"fid": 1.0, "status": "failed"})
    (sweep / "0" / "metrics.csv").write_text("epoch,step,fid\n0,x,\n,,y\n")  # garbage cells
    (sweep / "0" / "val_loss_by_sigma.csv").write_text("step,level\n1\n")
    assert main([str(sweep)]) == 0
    md = (sweep / "compare.md").read_text()
    assert "`4`: unreadable config" in md and "`5`: bad results.json" in md and "`6`: failed" in md
    assert (sweep / "compare.csv").is_file() and (sweep / "compare.png").is_file()


def test_jobs_with_an_unreadable_config_are_skipped_not_spilled_into_the_table(sweep, tmp_path):
    """Through ``python -m ncsn.compare``: a corrupt, non-UTF-8, empty or non-mapping config leaves
    its job out (listed under "Skipped jobs" with the reason, a warning on stderr); the settings
    and tables are those of the good jobs. A sweep of only such jobs: exit 2, one line."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "ncsn.compare"]
    clean = compare(sweep)
    bad = {"4": b"seed: [unclosed\n", "5": b"\xff\xfe\x00seed: 1\n", "6": b"", "7": b"- 1\n- 2\n"}
    for name, data in bad.items():
        (sweep / name / ".hydra").mkdir(parents=True)
        (sweep / name / ".hydra" / "config.yaml").write_bytes(data)
        (sweep / name / "results.json").write_text('{"fid": 1.0, "status": "finished"}')
    res = subprocess.run([*cmd, str(sweep), "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "r" / "compare.md").read_text()
    header = "| job | sigmas.num_scales | seed | best fid | best fid step | final fid |"
    assert header in md and len(md.split("## Every job")[1].split("\n")[2].split("|")) < 20
    rows = list(csv.reader((tmp_path / "r" / "compare.csv").open()))
    assert rows[0] == clean.columns and [r[0] for r in rows[1:]] == [r["job"] for r in clean.rows]
    skipped = md.split("## Skipped jobs")[1]
    for name, reason in (("4", "ParserError"), ("5", "UnicodeDecodeError"), ("6", "empty"), ("7", "not a mapping")):
        assert f"- `{name}`: unreadable config (" in skipped and reason in skipped, (name, skipped)
        assert f"| {name} |" not in md and f"skipped job {name}: unreadable config" in res.stderr
    only_bad = tmp_path / "only_bad"
    (only_bad / "4").mkdir(parents=True)
    (sweep / "4").rename(only_bad / "4")
    res = subprocess.run([*cmd, str(only_bad)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1
    assert "has a readable config" in res.stderr and not (only_bad / "compare.md").exists()


def test_empty_and_unfinished_only(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    _job(tmp_path, "0", 10, 0, None)
    assert main([str(tmp_path)]) == 0
    assert not (tmp_path / "compare.png").exists()
    assert "no plot" in capsys.readouterr().out


# -- real sweeps ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
    """A real 2x2 training sweep: train.py -m sigmas.num_scales=3,5 seed=0,1 (tiny digits runs,
    two FID evaluations each)."""
    tmp = tmp_path_factory.mktemp("digits")
    sweep = tmp / "sweep"
    res = run_cli(
        "train.py",
        "-m",
        *TINY_DIGITS,
        "sigmas.num_scales=3,5",
        "seed=0,1",
        "fid.classifier_epochs=2",
        f"paths.cache_dir={tmp / 'cache'}",
        "eval.n_samples=20",
        f"hydra.sweep.dir={sweep}",
        timeout=1200,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return sweep


@pytest.mark.slow
def test_real_training_sweep_no_paths_seeds_aggregated_best_fid(digits_sweep, tmp_path):
    c = compare(digits_sweep)
    # the checkpoint/sample/run dirpaths and the mirrored callbacks.samples.seed are not settings
    assert c.varying == ["sigmas.num_scales", "seed"] and c.group_keys == ["sigmas.num_scales"]
    assert c.metric == "fid" and len(c.jobs) == 4 and not c.unfinished
    assert [g.settings["sigmas.num_scales"] for g in c.groups] != []
    assert sorted(g.settings["sigmas.num_scales"] for g in c.groups) == [3, 5]
    for g in c.groups:
        assert g.stats["best fid"][2] == 2 and g.stats["best fid"][1] is not None  # mean ± std over 2 seeds
        assert g.stats["best fid"][0] <= g.stats["final fid"][0]
    means = [g.stats["best fid"][0] for g in c.groups]
    assert means == sorted(means)
    for job in c.jobs:  # best = the minimum of metrics.csv's fid column, at its step
        fids = [
            (int(r["step"]), float(r["fid"])) for r in csv.DictReader((job.path / "metrics.csv").open()) if r["fid"]
        ]
        assert len(fids) == 2
        row = next(r for r in c.rows if r["job"] == job.name)
        assert row["best fid"] == min(v for _, v in fids)
        assert (row["best fid step"], row["best fid"]) in fids
    out = tmp_path / "report"
    assert main([str(digits_sweep), "--out", str(out)]) == 0
    md = (out / "compare.md").read_text()
    assert md.count('<img src="../') == 4  # every job's final grid beside its group's row
    assert str(digits_sweep) not in md.split("## Every job")[0]  # no path in the ablation table
    assert (out / "loss_by_sigma.png").is_file() and (out / "compare.png").is_file()


def _readme_command(marker: str) -> list:
    """The README's documented sample.py line containing ``marker``, split into arguments (comment off)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("python sample.py") and marker in ln)
    return line.split("#")[0].split()


@pytest.mark.slow
def test_readme_step_size_sweep_gives_fid_per_step_size(digits_sweep, tmp_path):
    """The README's step-size sweep, as written there (the checkpoint filled in, tiny overrides
    appended): every job has FID, its grid and its overrides; compare's setting is sampler.step_lr."""
    ckpt = sweep_job(digits_sweep, "sigmas.num_scales=3", "seed=0") / "checkpoints" / "last.ckpt"
    cmd = _readme_command("sweep=step_lr")
    assert cmd[:3] == ["python", "sample.py", "-m"] and "ckpt_path=..." in cmd
    args = [f"ckpt_path='{ckpt}'" if a == "ckpt_path=..." else a for a in cmd[2:]]  # quoted: "=" and "," in it
    sweep = tmp_path / "sample_sweep"
    res = run_cli("sample.py", *args, "eval.n_samples=9", "device=cpu", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-3000:]
    c = compare(sweep)
    assert c.varying == ["sampler.step_lr"] and c.metric == "fid" and c.single and len(c.jobs) == 4
    assert [g.settings["sampler.step_lr"] for g in c.groups] != [] and not c.unfinished
    assert all(isinstance(r["fid"], float) for r in c.rows)
    for job in c.jobs:
        assert (job.path / "samples.png").is_file() and "sweep" in job.override_keys
    assert main([str(sweep)]) == 0
    md = (sweep / "compare.md").read_text()
    assert (sweep / "compare.png").is_file() and "| sampler.step_lr | n | fid |" in md
    assert "`sampler.step_lr` (5e-06, 1e-05, 2e-05, 5e-05)" in md and md.count('samples.png"><img') == 4


@pytest.mark.slow
def test_real_sampler_kind_sweep_compared_by_kind(digits_sweep, tmp_path):
    """sample.py -m ... sampler=annealed,pc mode=fid: the setting is the kind alone (not the
    keys each kind brings), and nfe.png draws one series per kind."""
    ckpt = sweep_job(digits_sweep, "sigmas.num_scales=3", "seed=0") / "checkpoints" / "last.ckpt"
    sweep = tmp_path / "kinds"
    res = run_cli(
        "sample.py",
        "-m",
        f"ckpt_path='{ckpt}'",
        "sampler=annealed,pc",
        "mode=fid",
        "eval.n_samples=9",
        "device=cpu",
        f"hydra.sweep.dir={sweep}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    c = compare(sweep)
    assert c.varying == ["sampler"] and c.metric == "fid" and not c.unfinished
    series = plot_nfe(c, tmp_path / "nfe.png")
    nfe = {j.config["sampler.kind"]: j.results["nfe"] for j in c.jobs}
    fid = {g.settings["sampler"]: g.stats["fid"][0] for g in c.groups}
    assert series == {k: [(float(nfe[k]), fid[k])] for k in nfe}
    assert sorted(series) == ["annealed", "pc"] and nfe["annealed"] != nfe["pc"]


def test_ignore_option_drops_a_key_that_differs(tmp_path, capsys):
    """A key present in some jobs only (e.g. added to the config while a sweep ran) is a setting
    unless --ignore names it."""
    _job(tmp_path, "0", 10, 0, {"fid": 2.0})
    _job(tmp_path, "1", 20, 0, {"fid": 1.0})
    cfg = yaml.safe_load((tmp_path / "1" / ".hydra" / "config.yaml").read_text())
    (tmp_path / "1" / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**cfg, "objective": "fid/best"}))
    # with overrides.yaml the settings are what the user swept: the extra key is not one
    assert compare(tmp_path).varying == ["sigmas.num_scales"]
    for j in ("0", "1"):  # without (a folder of run directories): every key that differs
        (tmp_path / j / ".hydra" / "overrides.yaml").unlink()
    assert compare(tmp_path).varying == ["objective", "model.num_classes"]  # num_scales: its mirror
    assert main([str(tmp_path), "--ignore", "objective"]) == 0
    md = (tmp_path / "compare.md").read_text()
    assert "| model.num_classes | n | fid |" in md and "`objective`" not in md


# -- sample.py sweeps, re-scoring, searches (fake run directories) -----------------------------
def _sample_job(root, name, overrides, sampler, results, ckpt="/ckpts/a/checkpoints/last.ckpt", train_cfg=None):
    """A sample.py job directory: its config (with the checkpoint's ``train_config``), the user's
    overrides, results.json."""
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    cfg = {"ckpt_path": ckpt, "mode": "fid", "seed": 0, "out_dir": str(d), "sampler": sampler}
    cfg["train_config"] = train_cfg or {"seed": 0, "sigmas": {"num_scales": 10}}
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"ckpt_path={ckpt}", "mode=fid", *overrides]))
    (d / "results.json").write_text(json.dumps({"status": "finished", "mode": "fid", **results}))
    return d


def test_step_size_sweep_sorts_numerically_without_duplicated_columns(tmp_path):
    """sample.py -m sampler.step_lr=...: the settings line and ties sort by value (5e-06 first),
    one metric column (one evaluation per job; fid/denoised = fid is not repeated), derived keys
    that differ (sampler.rho) are not settings; y on a log axis only when the range is wide."""
    fids = {5e-6: 40.0, 1e-5: 30.0, 2e-5: 30.0, 5e-5: 900.0}
    for i, (lr, fid) in enumerate(fids.items()):
        sampler = {"kind": "annealed", "step_lr": lr, "rho": 7.0 + i}  # rho: derived, differs per job
        _sample_job(tmp_path, str(i), [f"sampler.step_lr={lr}"], sampler, {"fid": fid, "fid/denoised": fid, "nfe": 11})
    c = compare(tmp_path)
    assert c.varying == ["sampler.step_lr"] and c.single and c.metric == "fid"
    assert [g.settings["sampler.step_lr"] for g in c.groups] == [1e-5, 2e-5, 5e-6, 5e-5]  # fid, then value
    assert c.columns == ["job", "sampler.step_lr", "fid", "nfe", "status"]
    assert main([str(tmp_path)]) == 0
    md = (tmp_path / "compare.md").read_text()
    assert "`sampler.step_lr` (5e-06, 1e-05, 2e-05, 5e-05)" in md
    assert "| sampler.step_lr | n | fid | nfe | samples |" in md and "best fid" not in md
    assert plot(c, tmp_path / "p.png") == [("sampler.step_lr", "linear", "log", True)]  # 900 / 30 > 10
    (tmp_path / "3" / "results.json").write_text(json.dumps({"status": "finished", "fid": 250.0}))
    assert plot(compare(tmp_path), tmp_path / "p.png") == [("sampler.step_lr", "linear", "linear", True)]


def test_kind_sweep_series_per_kind_against_nfe(tmp_path):
    """Sweeps of before (sample.py -m sampler.kind=...): kinds are categories (markers, never joined)
    and nfe.png has one series per kind against NFE, FID and KID panels."""
    runs = [("annealed", 11, 50.0), ("ode", 35, 40.0), ("pc", 21, 45.0), ("cas", 11, 60.0)]
    for i, (kind, nfe, fid) in enumerate(runs):
        sampler = {"kind": kind, "step_lr": 1e-5 * (i + 1), "rho": None if kind == "annealed" else 7.0}
        _sample_job(tmp_path, str(i), [f"sampler.kind={kind}"], sampler, {"fid": fid, "kid": fid / 1e3, "nfe": nfe})
    c = compare(tmp_path)
    assert c.varying == ["sampler.kind"] and "kid" in c.headline
    assert plot(c, tmp_path / "p.png") == [("sampler.kind", "linear", "linear", False)]
    assert plot_nfe(c, tmp_path / "nfe.png") == {k: [(float(n), f)] for k, n, f in runs}
    assert main([str(tmp_path)]) == 0
    assert "(nfe.png)" in (tmp_path / "compare.md").read_text()


def test_rescored_training_sweep_groups_by_training_settings(tmp_path):
    """sample.py -m ckpt_path=a,b,c,d mode=fid on a training sweep's checkpoints: grouped by the
    training jobs' swept settings (valued from the checkpoints' configs), training seeds aggregated."""
    train = tmp_path / "train"
    for i, (L, seed) in enumerate([(10, 0), (10, 1), (20, 0), (20, 1)]):
        tcfg = yaml.safe_load(_job(train, str(i), L, seed).joinpath(".hydra", "config.yaml").read_text())
        ckpt = str(train / str(i) / "checkpoints" / "last.ckpt")
        sampler = {"kind": "annealed", "step_lr": 1e-5 * L}  # derived from L: not a setting
        _sample_job(tmp_path / "rescore", str(i), [], sampler, {"fid": 10.0 * L + seed}, ckpt=ckpt, train_cfg=tcfg)
    c = compare(tmp_path / "rescore")
    assert c.varying == ["train_config.sigmas.num_scales", "train_config.seed"]  # not ckpt_path, sampler.step_lr
    assert c.group_keys == ["train_config.sigmas.num_scales"] and c.seed_keys == ["train_config.seed"]
    assert [(g.settings["train_config.sigmas.num_scales"], g.stats["fid"][0], g.stats["fid"][2]) for g in c.groups] == [
        (10, 100.5, 2),
        (20, 200.5, 2),
    ]


def test_optuna_search_one_scatter_per_parameter(tmp_path):
    """A sweep directory holding optimization_results.yaml: compare.png is one scatter per searched
    parameter against the objective (no lines), log x for a parameter spanning > 10x."""
    params = [(0.5, 4, 80.0), (8.0, 8, 60.0), (2.0, 12, 50.0), (1.0, 16, 70.0), (30.0, 20, 90.0)]
    for i, (sigma, L, fid) in enumerate(params):
        d = _job(tmp_path, str(i), L, 0, {"fid": fid, "status": "finished"})
        (d / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"sigmas.sigma_begin={sigma}", f"sigmas.num_scales={L}"])
        )
        cfg = yaml.safe_load((d / ".hydra" / "config.yaml").read_text())
        cfg["sigmas"]["sigma_begin"] = sigma
        (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    c = compare(tmp_path)
    assert plot_search(c, tmp_path / "s.png") == [
        ("sigmas.sigma_begin", 5, "log", 0),
        ("sigmas.num_scales", 5, "linear", 0),
    ]
    assert not is_search(tmp_path)
    (tmp_path / "optimization_results.yaml").write_text("name: optuna\n")
    assert main([str(tmp_path)]) == 0
    assert "![search: each trial's fid against each parameter](compare.png)" in (tmp_path / "compare.md").read_text()


def test_significance_in_words_welch_for_seed_groups_and_intervals_for_single_runs(tmp_path):
    """Each group against the best: Welch's t-test when both have seeds (a clear gap is
    significant, a gap inside the noise is not), interval overlap for single sample.py runs."""
    from scipy.stats import ttest_ind

    from ncsn.compare.significance import significance

    root = tmp_path / "train"
    fids = {10: [30.0, 31.0, 29.5], 3: [60.0, 62.0, 58.0], 30: [30.5, 33.0, 28.0]}
    for L, values in fids.items():
        for seed, fid in enumerate(values):
            _job(root, f"L{L}-s{seed}", L, seed, {"fid": fid, "status": "finished"})
    c = compare(root)
    words = significance(c)
    assert [g.settings["sigmas.num_scales"] for g in c.groups] == [10, 30, 3]
    p_30 = ttest_ind(fids[10], fids[30], equal_var=False).pvalue
    p_3 = ttest_ind(fids[10], fids[3], equal_var=False).pvalue
    assert (
        words[0] == f"num_scales=10 vs num_scales=30: not significant: p={p_30:.2g}, n=3 each (Welch's t-test on `fid`)"
    )
    assert words[1] == f"num_scales=10 beats num_scales=3: p={p_3:.2g}, n=3 each (Welch's t-test on `fid`)"
    assert p_3 < 0.05 < p_30
    assert main([str(root)]) == 0 and "num_scales=10 beats num_scales=3" in (root / "compare.md").read_text()

    single = tmp_path / "sample"
    for i, (lr, fid, low, high) in enumerate([(1e-5, 30.0, 25.0, 35.0), (2e-5, 33.0, 29.0, 38.0), (5e-5, 60, 52, 70)]):
        ci = {"fid_ci_low": low, "fid_ci_high": high, "nfe": 11}
        _sample_job(single, str(i), [f"sampler.step_lr={lr}"], {"kind": "annealed", "step_lr": lr}, {"fid": fid, **ci})
    words = significance(compare(single))
    assert words[0].startswith(
        "step_lr=1e-05 vs step_lr=2e-05: not distinguishable: 95% intervals [25, 35] and [29, 38]"
    )
    assert words[1].startswith("step_lr=1e-05 beats step_lr=5e-05") and "do not overlap" in words[1]


def test_a_setting_that_changed_nothing_is_called_identical(tmp_path):
    """Groups equal seed for seed (a knob the configuration does not use, e.g. L when sigma is
    drawn continuously and the sampler has its own grid) are named as such, not tested as noise."""
    from ncsn.compare.significance import significance

    root = tmp_path / "train"
    per_seed = [43.0, 50.1, 61.2]
    for L in (3, 10, 30):
        for seed, fid in enumerate(per_seed):
            _job(root, f"L{L}-s{seed}", L, seed, {"fid": fid + (0.5 if L == 30 and seed == 2 else 0.0)})
    words = significance(compare(root))
    assert words[0].startswith("num_scales=3 vs num_scales=10: identical seed for seed (n=3)")
    assert "not significant" in words[1] and "identical" not in words[1]  # one seed differs: a real (tiny) change
