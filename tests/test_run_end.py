"""What a run leaves for its user: the W&B offline run (best FID in the summary, name, group,
tags, final samples, results), one step convention across files, metrics.csv, results.json and
W&B, the end-of-run console lines, .hydra/hydra.yaml, the Optuna search and the W&B Sweep config."""

from __future__ import annotations

import csv
import json
import re

import pytest
import yaml
from conftest import ROOT, TINY_DIGITS, free_port, run_cli, sweep_job
from hydra import compose, initialize_config_dir

from ncsn.training.loggers import make_wandb_logger
from ncsn.training.wandb_offline import read_offline_run
from ncsn.workflow.run_summary import best_metric
from ncsn.workflow.wandb_run import short_names, sweep_varying_keys

TINY_FID = [*TINY_DIGITS, "fid.classifier_epochs=3", "eval.n_samples=16"]


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """One tiny digits run with W&B offline: 2 epochs of 3 steps, samples + FID every epoch."""
    tmp = tmp_path_factory.mktemp("wb")
    run_dir = tmp / "run"
    res = run_cli(
        "train.py",
        *TINY_FID,
        "logger=default",  # CSV and W&B (offline in the tests)
        f"paths.cache_dir={tmp / 'cache'}",
        f"hydra.run.dir={run_dir}",
        "logger.wandb.tags=[ablation,cpu]",
        "logger.wandb.notes=tiny test run",
        "logger.wandb.job_type=test",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir, res


@pytest.mark.slow
def test_wandb_offline_summary_holds_the_minimum_fid(wandb_run):
    run_dir, _ = wandb_run
    wb = read_offline_run(run_dir)
    fids = [(float(r["fid"]), int(r["step"])) for r in rows(run_dir / "metrics.csv") if r["fid"]]
    assert len(fids) == 2
    best, best_step = min(fids, key=lambda t: (t[0], t[1]))
    summary = wb["summary"]
    assert summary["fid"]["min"] == pytest.approx(best) and summary["fid"]["last"] == pytest.approx(fids[-1][0])
    assert summary["fid/best"] == pytest.approx(best) and summary["fid/best_step"] == best_step
    assert wb["metrics"]["fid"]["summary"] == ["min", "last"]  # define_metric is recorded
    # results.json's numbers and the final samples are in the run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["fid/best"] == pytest.approx(best) and results["fid/best_step"] == best_step
    assert summary["results/global_step"] == results["global_step"] == 6
    assert summary["results/status"] == "finished"
    assert summary["samples/final"]["_type"].startswith("images")
    # a single run has a name, a group and tags (the experiment's and the CLI's), notes, job type
    run = wb["run"]
    assert run["group"] == "digits_ncsn" and re.fullmatch(r"digits_ncsn_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d", run["name"])
    assert run["tags"] == ["digits_ncsn", "ablation", "cpu"]
    assert run["notes"] == "tiny test run" and run["job_type"] == "test"


@pytest.mark.slow
def test_resumed_run_continues_the_best_fid_in_wandb_and_results(tmp_path):
    """A run resumed in its directory starts a new (offline) W&B run whose fid/best and
    fid/best_step continue from metrics.csv: an early best (made the lowest by hand) is kept."""
    run_dir = tmp_path / "run"
    common = [*TINY_FID, "logger=default", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    res = run_cli("train.py", *common)
    assert res.returncode == 0, res.stderr[-3000:]
    table = rows(run_dir / "metrics.csv")
    for r in table:
        if r["fid"] and int(r["step"]) == 3:
            r["fid"] = "0.5"  # the best FID of the run so far, at step 3
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    res = run_cli("train.py", *common, "trainer.max_steps=9")  # resumes from last.ckpt (step 6)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    summary = read_offline_run(runs[-1])["summary"]
    assert summary["fid/best"] == pytest.approx(0.5) and summary["fid/best_step"] == 3
    assert summary["fid"]["last"] > 0.5  # the resumed run's own FID (step 9) is not the best
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 9 and results["fid/best"] == pytest.approx(0.5) and results["fid/best_step"] == 3


@pytest.mark.slow
def test_one_step_convention_across_files_metrics_results_and_wandb(wandb_run):
    """step = trainer.global_step (optimizer steps done); epoch = 0-based epoch index."""
    run_dir, _ = wandb_run
    metrics = rows(run_dir / "metrics.csv")
    train_steps = [int(r["step"]) for r in metrics if r["train/loss"]]
    assert train_steps == [1, 2, 3, 4, 5, 6]
    val = [(int(r["epoch"]), int(r["step"])) for r in metrics if r["val/loss"]]
    assert val == [(0, 3), (1, 6)]
    grids = sorted(p.name for p in (run_dir / "samples").glob("epoch*.png"))
    assert grids == [f"epoch{e:04d}_step{s:07d}.png" for e, s in val]
    ckpts = {p.name for p in (run_dir / "checkpoints").glob("step*.ckpt")}
    assert ckpts == {"step0000003.ckpt", "step0000006.ckpt"}
    results = json.loads((run_dir / "results.json").read_text())
    assert (results["epoch"], results["global_step"]) == val[-1]
    wb = read_offline_run(run_dir)
    logged = [(h.get("epoch"), h["trainer/global_step"]) for h in wb["history"] if "val/loss" in h]
    assert logged == val
    assert wb["summary"]["trainer/global_step"] == results["global_step"]


@pytest.mark.slow
def test_console_says_what_happened_once(wandb_run, tmp_path):
    run_dir, res = wandb_run
    out = res.stdout + res.stderr
    lines = res.stdout.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("── train.py finished")))
    summary = "\n".join(lines[head:])
    for part in (
        f"run directory  {run_dir}",
        "status         finished (global step 6, epoch 1)",
        "FID            best ",
        "val/loss",
        f"samples        {run_dir / 'samples'}  (final.png, 2 grids)",
        f"checkpoints    {run_dir / 'checkpoints'}  (last.ckpt, best.ckpt",
    ):
        assert part in summary, (part, summary)
    # each log line once (Lightning's own handler and Hydra's printed them twice), no tips or noise
    assert out.count("GPU available") == 1 and out.count("`Trainer.fit` stopped") == 1
    for noise in ("litlogger", "LeafSpec", "smaller than the logging interval", "anonymous setting"):
        assert noise not in out, noise
    # .hydra/hydra.yaml: Hydra's record of the job (the chosen config-group options), beside config.yaml
    hydra_cfg = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]
    assert hydra_cfg["runtime"]["choices"]["experiment"] == "digits_ncsn"
    assert "logger.wandb.job_type=test" in hydra_cfg["overrides"]["task"]

    # sample.py tells what it wrote, too
    out_dir = tmp_path / "sampled"
    res = run_cli(
        "sample.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "sampler.n_samples=4",
        f"hydra.run.dir={out_dir}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "── sample.py finished" in res.stdout and f"run directory  {out_dir}" in res.stdout
    assert "samples.png" in res.stdout and (out_dir / ".hydra" / "hydra.yaml").is_file()


def test_wandb_options_log_model_needs_an_online_run(tmp_path, monkeypatch, caplog):
    common = dict(save_dir=str(tmp_path), project="p", entity=None, group=None, name=None, tags=[])
    with pytest.raises(ValueError, match="log_model=True needs an online run"):
        make_wandb_logger(mode="offline", log_model=True, **common)
    with pytest.raises(ValueError, match="resume='sometimes'"):
        make_wandb_logger(mode="offline", resume="sometimes", **common)
    monkeypatch.setenv("WANDB_MODE", "offline")  # mode=auto resolves to offline here: ignored, with a warning
    logger = make_wandb_logger(mode="auto", log_model="all", job_type="train", notes="n", **common)
    assert logger._log_model is False and "log_model=all ignored" in caplog.text
    assert logger._wandb_init["job_type"] == "train" and logger._wandb_init["notes"] == "n"


def test_sweep_names_are_made_of_the_varying_keys():
    from omegaconf import OmegaConf

    hc = OmegaConf.create({"sweeper": {"params": {"sigmas.num_scales": "1,3,10"}}})
    argv = ["-m", "sweep=num_scales", "seed=0,1", "model.ngf=8", "sampler.step_lr=range(1,3)", "+x.y=1"]
    assert sweep_varying_keys(hc, argv) == {"sigmas.num_scales", "seed", "sampler.step_lr"}
    assert short_names(["sigmas.num_scales", "seed", "a.seed"]) == {
        "sigmas.num_scales": "num_scales",
        "seed": "seed",
        "a.seed": "a.seed",
    }


def test_best_metric_reads_the_lowest_value_and_its_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,fid,step,val/loss\n0,5.0,3,1\n0,,4,\n1,2.5,6,1\n2,2.5,9,1\n3,nan,12,1\n")
    assert best_metric(path) == {"fid/best": 2.5, "fid/best_step": 6}
    assert best_metric(path, "missing") == {} and best_metric(tmp_path / "absent.csv") == {}


@pytest.mark.slow
def test_wandb_sweep_group_and_names_under_multirun(tmp_path):
    res = run_cli(
        "train.py",
        "-m",
        "seed=0,1",
        *TINY_DIGITS,
        "fid=none",
        "callbacks.best=null",
        "trainer.max_steps=3",
        "logger=default",
        f"hydra.sweep.dir={tmp_path / 'sweep' / '2026-12-01' / '23-40-05'}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = tmp_path / "sweep" / "2026-12-01" / "23-40-05"
    runs = [read_offline_run(sweep_job(sweep, f"seed={i}"))["run"] for i in (0, 1)]
    assert [r["name"] for r in runs] == ["seed=0", "seed=1"]  # only the key that varies
    assert {r["group"] for r in runs} == {"digits_ncsn_2026-12-01_23-40-05"}  # unique across days
    assert res.stdout.count("── train.py finished") == 2


# -- the W&B Sweep config -------------------------------------------------------------------------


def agent_args(sweep: dict) -> list[str]:
    """The arguments W&B's agent gives train.py for one draw: ${args_no_hyphens} (key=value of
    every parameter, here the first value / the lower bound) and the command's literal arguments."""
    args = []
    for key, spec in sweep["parameters"].items():
        value = spec["values"][0] if "values" in spec else spec.get("value", spec.get("min"))
        args.append(f"{key}={value}")
    literal = [a for a in sweep["command"] if not a.startswith("${")]
    assert sweep["command"][:4] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
    return args + literal


def test_wandb_sweep_command_composes_and_validates():
    from ncsn.workflow.build import build_sampler, build_sigmas
    from ncsn.workflow.config import validate_train

    sweep = yaml.safe_load((ROOT / "docs" / "wandb_sweep.yaml").read_text())
    assert sweep["program"] == "train.py" and sweep["metric"] == {"name": "fid/best", "goal": "minimize"}
    for pick in ("min", "max"):
        args = []
        for key, spec in sweep["parameters"].items():
            value = spec["values"][0 if pick == "min" else -1] if "values" in spec else spec[pick]
            args.append(f"{key}={value}")
        args += [a for a in sweep["command"] if not a.startswith("${")]
        assert args == agent_args(sweep) or pick == "max"
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=args)
        validate_train(cfg)
        assert len(build_sigmas(cfg)) == cfg.sigmas.num_scales
        build_sampler(cfg.sampler)
        assert cfg.logger.wandb.job_type == "sweep"
    # and on the command line: Hydra accepts exactly what the agent passes
    res = run_cli("train.py", *agent_args(sweep), "--cfg", "job")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sigma_begin: 0.5" in res.stdout


class _RejectingWandbServer:
    """A local HTTP server that answers every request as W&B does for a bad API key (401)."""

    def __init__(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"errors":[{"message":"invalid api key"}]}')

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_wandb_online_with_a_bad_key_stops_at_once_with_one_line(tmp_path):
    """WANDB_MODE=online with a key the server rejects: exit 2, one line, before any work (W&B's
    own path raised mid-run after its retries)."""
    server = _RejectingWandbServer()
    run_dir = tmp_path / "run"
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": server.url, "HOME": str(tmp_path)}
    try:
        res = run_cli("train.py", *TINY_DIGITS, "logger=wandb", f"hydra.run.dir={run_dir}", env_extra=env, timeout=120)
    finally:
        server.close()
    assert res.returncode == 2, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "WANDB_MODE=online: W&B did not accept the credentials" in errors[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "wandb").exists()


def test_wandb_online_without_credentials_or_server_is_refused(tmp_path, monkeypatch):
    common = dict(save_dir=str(tmp_path / "w"), project="p", entity=None, group=None, name=None, tags=[])
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    with pytest.raises(ValueError, match=r"logger.wandb.mode=online: no W&B credentials .*WANDB_API_KEY"):
        make_wandb_logger(mode="online", **common)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(ValueError, match=r"logger.wandb.mode=online: the W&B server http://127.0.0.1:\d+ cannot be"):
        make_wandb_logger(mode="online", **common)
    assert not (tmp_path / "w").exists()


def test_summary_lines_name_each_fact_once(tmp_path):
    """The end-of-run lines, as a pure function of results.json and the run directory."""
    from ncsn.workflow.run_summary import summary_lines

    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "final.png").write_bytes(b"")
    (tmp_path / "samples" / "epoch0001.png").write_bytes(b"")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "metrics.csv").write_text("")
    res = {"status": "finished", "global_step": 30, "epoch": 2, "fid/best": 31.44, "fid/best_step": 20, "fid": 33.0}
    lines = summary_lines("train.py", tmp_path, {**res, "fid/denoised": 9.0, "val/loss": 0.5})
    body = {line.split("  ", 1)[0].strip(): line.split("  ", 1)[1].strip() for line in lines[1:]}
    assert lines[0].startswith("── train.py finished ")
    assert body["status"] == "finished (global step 30, epoch 2)"
    assert body["FID"] == "best 31.44 at step 20, final 33"  # denoised variants: sample.py only
    assert body["val/loss"] == "0.5" and body["metrics.csv"].endswith("metrics.csv")
    assert body["samples"].endswith("(final.png, 1 grid)") and body["checkpoints"].endswith("(last.ckpt, 1 file)")
    lines = summary_lines("sample.py", tmp_path, {"fid": 5.0, "fid/denoised": 4.0, "mode": "fid"})
    body = {line.split("  ", 1)[0].strip(): line.split("  ", 1)[1].strip() for line in lines[1:]}
    assert body["FID"] == "final 5, denoised 4" and body["mode"] == "fid" and body["files"] == "metrics.csv"
    assert "samples" not in body and summary_lines("train.py", tmp_path, {"status": "skipped"}) == [
        f"── train.py finished, skipped: {tmp_path.resolve()}"
    ]
