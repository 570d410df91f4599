"""Runs that survive: resume, kills, SIGTERM, divergence, untrusted checkpoints, mixed runs."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli, sweep_job
from hydra import compose, initialize_config_dir

import ncsn.core.losses
import ncsn.training.score_model
from ncsn.training.checkpoint_io import AtomicCheckpointIO
from ncsn.training.loggers import LOGGING_STEP_OFFSET as OFF  # a row's step: the global step after its batch
from ncsn.workflow.entry import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_OK, run_entry
from ncsn.workflow.runlock import LOCK_NAME
from ncsn.workflow.train import train

# toy runs with 4 batches per epoch, no sampling during training
TOY = [
    "experiment=toy_gmm",
    "data.n_train=2048",
    "data.n_val=256",
    "trainer.check_val_every_n_epoch=2",
    "callbacks.samples.every_n_epochs=1000",
    "sampler.n_samples=16",
    "sampler.n_steps_each=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
    "trainer.log_every_n_steps=1",
]


def compose_train(overrides, run_dir):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=[*TOY, *overrides, f"paths.run_dir={run_dir}"])


def metric_steps(run_dir, column):
    """The steps of metrics.csv's rows that hold ``column``, in file order."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row.get(column)]


def metric_rows(run_dir):
    """(step, train/loss, val/loss) of each row of metrics.csv, in file order."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(row["step"], row.get("train/loss"), row.get("val/loss")) for row in csv.DictReader(f)]


def net_weights(path):
    sd = torch.load(path, weights_only=True)["state_dict"]
    return {k: v for k, v in sd.items() if k.startswith(("net.", "ema."))}


@pytest.mark.parametrize("limit", ["epochs", "steps"])
def test_resume_equivalence_straight_vs_half_plus_resume(tmp_path, limit):
    """16 steps straight == 8 steps, then the same command resumed to 16 (4 batches per epoch:
    the split is at an epoch boundary; stopped by max_epochs, or by max_steps on an epoch's last
    batch). Mid-epoch splits: test_mid_epoch_resume_with_workers_and_augmentation_equals_straight."""
    straight, halves = tmp_path / "straight", tmp_path / "halves"

    def until(n_steps):
        if limit == "epochs":
            return ["trainer.max_steps=-1", f"trainer.max_epochs={n_steps // 4}"]
        return [f"trainer.max_steps={n_steps}"]

    assert run_entry(train, compose_train(until(16), straight)) == EXIT_OK
    assert run_entry(train, compose_train(until(8), halves)) == EXIT_OK
    assert torch.load(halves / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    # the same command again, longer: resumes from halves/checkpoints/last.ckpt (step 8)
    assert run_entry(train, compose_train(until(16), halves)) == EXIT_OK
    assert json.loads((halves / "results.json").read_text())["global_step"] == 16
    a, b = net_weights(straight / "checkpoints" / "last.ckpt"), net_weights(halves / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=1e-5), k
    # the first half's rows were kept, not deleted, and no step was logged twice: each training
    # step once, in order, and the validations of the straight run at the same steps
    assert metric_steps(halves, "train/loss") == list(range(OFF, 16 + OFF))
    assert metric_steps(halves, "val/loss") == metric_steps(straight, "val/loss")


@pytest.mark.parametrize("every", [3, 1000])
def test_mid_epoch_resume_with_workers_and_augmentation_equals_straight(tmp_path, every):
    """The papers checkpoint every 5,000 steps, mid-epoch: 10 steps straight == 6 steps, then the
    same command resumed to 10, on digits (13 batches per epoch) with 2 loader workers, random
    flips and dequantization. The resumed epoch skips the 6 batches already trained, and each
    image's flip and noise depend on (seed, epoch, index) only, not on the worker's random stream.
    every=3: last.ckpt is the periodic one after step 6's batch; every=1000: the one written when
    max_steps ends fit (Lightning records that epoch as finished; lit.resume_where_fit_stopped)."""
    from conftest import TINY_DIGITS

    def cfg(steps, run_dir):
        tiny = [o for o in TINY_DIGITS if not o.startswith(("trainer.max_steps", "trainer.limit_train_batches"))]
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    *tiny,
                    f"trainer.max_steps={steps}",
                    "fid=none",
                    "callbacks.best=null",
                    "callbacks.samples.every_n_epochs=1000",
                    "trainer.check_val_every_n_epoch=1000",
                    "data.num_workers=2",
                    "data.random_flip=true",
                    f"callbacks.checkpoint.every_n_train_steps={every}",
                    f"paths.run_dir={run_dir}",
                ],
            )

    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert run_entry(train, cfg(10, straight)) == EXIT_OK
    assert run_entry(train, cfg(6, halves)) == EXIT_OK
    first = torch.load(halves / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 6
    assert first["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["ready"] == 6  # of 13: mid-epoch
    assert run_entry(train, cfg(10, halves)) == EXIT_OK
    a, b = net_weights(straight / "checkpoints" / "last.ckpt"), net_weights(halves / "checkpoints" / "last.ckpt")
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=1e-5), k


def test_ddp_failure_on_one_rank_stops_every_rank_and_shows_that_ranks_error(tmp_path):
    """Two CPU ranks (gloo); rank 1 raises in its third training step. The run must end (not hang
    in the next collective), exit non-zero, show rank 1's own error, and record the failure."""
    (tmp_path / "conf").symlink_to(ROOT / "conf")  # Hydra looks for conf/ beside the main script
    train_py = str(ROOT / "train.py")
    driver = tmp_path / "driver.py"  # Lightning starts rank 1 by re-running this script: it is patched too
    driver.write_text(
        textwrap.dedent(f"""
        import os
        import torch
        import ncsn.core.losses
        real, calls = ncsn.core.losses.dsm_loss, []
        def fail_on_rank_1(*args, **kwargs):
            if os.environ.get("LOCAL_RANK") == "1" and torch.is_grad_enabled():
                calls.append(1)
                if len(calls) == 3:
                    raise RuntimeError("rank 1 broke on purpose")
            return real(*args, **kwargs)
        ncsn.core.losses.dsm_loss = fail_on_rank_1
        exec(compile(open({train_py!r}).read(), {train_py!r}, "exec"), {{"__name__": "__main__"}})
    """)
    )
    run_dir = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    res = subprocess.run(
        [
            sys.executable,
            str(driver),
            "experiment=toy_gmm",
            "trainer.max_steps=20",
            "trainer.devices=2",
            "trainer.strategy=ddp",
            "trainer.accelerator=cpu",
            "logger=csv",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode != 0
    assert "RuntimeError: rank 1 broke on purpose" in res.stderr
    results = json.loads((run_dir / "results.json").read_text())  # rank 0 records that the run failed
    assert results["status"] == "failed" and results["global_step"] < 20


def test_run_dir_with_a_different_config_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_entry(train, compose_train(["trainer.max_steps=4"], run_dir)) == EXIT_OK
    before = (run_dir / ".hydra" / "config.yaml").read_text()
    assert run_entry(train, compose_train(["trainer.max_steps=8", "optim.lr=0.01"], run_dir)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "already holds a different config" in err and "optim.lr: 0.001 -> 0.01" in err
    assert (run_dir / ".hydra" / "config.yaml").read_text() == before
    assert (
        run_entry(train, compose_train(["trainer.max_steps=8", "optim.lr=0.01", "allow_config_change=true"], run_dir))
        == EXIT_OK
    )
    assert list((run_dir / ".hydra").glob("config.before-*.yaml"))  # the old record is kept


def test_nonfinite_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path, capsys, monkeypatch):
    real = ncsn.core.losses.dsm_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # injects NaN into the 11th training batch's loss
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 11:
                per = out.per_example.clone()
                per[0] = float("nan")
                return out._replace(loss=per.mean(), per_example=per)
        return out

    monkeypatch.setattr(ncsn.core.losses, "dsm_loss", poisoned)
    run_dir = tmp_path / "run"
    cfg = compose_train(["trainer.max_steps=40", "callbacks.checkpoint.every_n_train_steps=4"], run_dir)
    assert run_entry(train, cfg) == EXIT_DIVERGED
    err = capsys.readouterr().err
    assert "non-finite DSM loss at global step 10" in err and "offending noise level indices [" in err
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 8 and all(
        torch.isfinite(v).all() for v in net_weights(run_dir / "checkpoints" / "last.ckpt").values()
    )
    assert json.loads((run_dir / "results.json").read_text())["status"] == "diverged"

    calls["n"] = 0
    skip_dir = tmp_path / "skip"
    assert run_entry(train, compose_train(["trainer.max_steps=20", "loss.on_nonfinite=skip"], skip_dir)) == EXIT_OK
    results = json.loads((skip_dir / "results.json").read_text())
    assert results["train/skipped_batches"] == 1.0 and results["status"] == "finished"


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['NCSN_PWNED']}",))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("NCSN_PWNED", str(marker))
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {}}, "x": Payload()}, evil)
    for script, extra in (("sample.py", []), ("train.py", TOY)):
        res = run_cli(script, *extra, f"ckpt_path={evil}", f"hydra.run.dir={tmp_path / script}")
        assert res.returncode == EXIT_BAD_INPUT, res.stderr[-2000:]
        assert "refused, not a plain weights-only checkpoint" in res.stderr
        assert not marker.exists()


def test_checkpoint_from_another_architecture_lists_mismatched_keys(tmp_path, capsys):
    src = tmp_path / "src"
    assert run_entry(train, compose_train(["trainer.max_steps=2"], src)) == EXIT_OK
    cfg = compose_train(
        ["trainer.max_steps=2", "model.hidden=64", f"ckpt_path={src / 'checkpoints' / 'last.ckpt'}"], tmp_path / "dst"
    )
    assert run_entry(train, cfg) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "different architecture" in err and "shape mismatch: linears.0.weight (128, 2) vs (64, 2)" in err


def test_atomic_checkpoint_write_survives_sigkill_mid_write(tmp_path):
    """A process killed while writing leaves the previous complete checkpoint in place."""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(3)}, target)
    script = f"""
import time, torch, sys
sys.path.insert(0, {str(ROOT / "src")!r})
from ncsn.training.checkpoint_io import AtomicCheckpointIO
class Slow:
    def __reduce__(self):
        print("writing", flush=True); time.sleep(60); return (int, (0,))
AtomicCheckpointIO().save_checkpoint({{"step": 2, "w": torch.zeros(1000, 1000), "slow": Slow()}}, {str(target)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    assert torch.load(target, weights_only=True)["step"] == 1


def test_sigterm_stops_a_multirun_at_the_preempted_job_and_the_sweep_resumes(tmp_path):
    """SIGTERM during job 0 of a 2-job sweep: the process exits 0 without starting job 1; the same
    command with the same hydra.sweep.dir resumes job 0 from its checkpoint and runs job 1."""
    sweep = tmp_path / "sweep"

    def command(max_steps):
        return [
            sys.executable,
            str(ROOT / "train.py"),
            "-m",
            *TOY,
            f"trainer.max_steps={max_steps}",
            "data.n_train=4096",
            "callbacks.checkpoint.every_n_train_steps=100000",
            "seed=1,2",
            f"hydra.sweep.dir={sweep}",
        ]

    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    proc = subprocess.Popen(command(100000), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            metrics = next(sweep.glob("*/metrics.csv"), None)  # the first job's (named by its settings)
            if metrics is not None and len(metrics.read_text().splitlines()) >= 20:
                break
            time.sleep(0.5)
        assert metrics is not None, "training did not start"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:  # still running (e.g. it went on to the next job): do not leave it behind
            proc.kill()
            proc.wait()
    job0 = sweep_job(sweep, "seed=1")
    assert json.loads((job0 / "results.json").read_text())["status"] == "preempted"
    assert [p for p in sweep.iterdir() if p.is_dir()] == [job0]  # the sweep stopped at the preempted job
    step = torch.load(job0 / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    res = subprocess.run(command(step + 8), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    for seed in ("1", "2"):
        results = json.loads((sweep_job(sweep, f"seed={seed}") / "results.json").read_text())
        assert results["status"] == "finished" and results["global_step"] == step + 8
    assert metric_steps(job0, "train/loss") == list(range(OFF, step + 8 + OFF))  # resumed, not restarted


def test_sigterm_saves_checkpoint_and_exits_zero_then_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        str(ROOT / "train.py"),
        *TOY,
        "trainer.max_steps=100000",
        "data.n_train=4096",
        "callbacks.checkpoint.every_n_train_steps=100000",
        f"hydra.run.dir={run_dir}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 20):
        time.sleep(0.5)
    assert metrics.exists(), "training did not start"
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    assert code == 0, proc.stderr.read()[-2000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.exists() and last.stat().st_mtime >= sent - 1  # written on SIGTERM, not before
    step = torch.load(last, weights_only=True)["global_step"]
    assert step >= 19
    assert json.loads((run_dir / "results.json").read_text())["status"] == "preempted"
    before = metric_rows(run_dir)
    # the same command, with an end in sight, resumes from that step
    res = run_cli(
        "train.py",
        *TOY,
        f"trainer.max_steps={step + 8}",
        "data.n_train=4096",
        "callbacks.checkpoint.every_n_train_steps=100000",
        f"hydra.run.dir={run_dir}",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == step + 8
    # it continued at the saved step (a restart from step 0 would also reach step + 8): the rows
    # logged before SIGTERM are kept as they were, none moved out, and no step is logged twice
    assert "Restoring states from the checkpoint" in res.stdout + res.stderr
    assert not (run_dir / "metrics.dropped.csv").exists()
    assert metric_rows(run_dir)[: len(before)] == before
    assert metric_steps(run_dir, "train/loss") == list(range(OFF, step + 8 + OFF))


def test_speed_keys_train_and_keep_checkpoint_keys(tmp_path):
    """speed.channels_last, optim.fused and sampler.autocast run end to end; the checkpoint keys
    are the plain network's (no compiled-wrapper or layout artefacts)."""
    run_dir = tmp_path / "run"
    cfg = compose_train(
        ["trainer.max_steps=4", "speed.channels_last=true", "optim.fused=true", "sampler.autocast=bf16"], run_dir
    )
    assert run_entry(train, cfg) == EXIT_OK
    keys = set(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    plain = tmp_path / "plain"
    assert run_entry(train, compose_train(["trainer.max_steps=4"], plain)) == EXIT_OK
    assert keys == set(torch.load(plain / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])


def _stale_results(run_dir):
    """A results.json of an earlier run in the directory: a preempted run must replace it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps({"status": "finished", "global_step": 999}))


def test_sigterm_in_the_first_seconds_is_preempted_exit_0_with_honest_results(tmp_path):
    run_dir = tmp_path / "run"
    _stale_results(run_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *TOY, f"hydra.run.dir={run_dir}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)  # the interpreter is up; train.py is importing or composing the config
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results == {"status": "preempted", "preempted_in": "start-up", "global_step": 0}
    assert not (run_dir / "checkpoints").exists() and not (run_dir / LOCK_NAME).exists()


def test_sigterm_during_the_final_samples_is_preempted_exit_0_with_honest_results(tmp_path):
    run_dir = tmp_path / "run"
    _stale_results(run_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *TOY,
            "trainer.max_steps=2",
            "sampler.n_steps_each=200000",
            f"hydra.run.dir={run_dir}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        last = run_dir / "checkpoints" / "last.ckpt"
        deadline = time.time() + 300
        while time.time() < deadline and not last.exists() and proc.poll() is None:
            time.sleep(0.2)
        assert last.exists(), proc.stderr.read()[-2000:]
        time.sleep(5)  # fit has ended (last.ckpt is its last write): the final samples are being drawn
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "preempted" and results["preempted_in"] == "final samples", results
    assert results["global_step"] == 2 and "sample/final_time_s" not in results
    assert not (run_dir / "samples" / "final.png").exists()


def test_ctrl_c_during_the_final_samples_exits_130_with_honest_results_and_resumes(tmp_path, monkeypatch):
    """A Ctrl-C (SIGINT) while the final samples are drawn: exit 130, results.json says interrupted
    in the final samples with the training's results, last.ckpt intact; the same command draws them."""
    import ncsn.workflow.run_record as run_record

    run_dir, real = tmp_path / "run", run_record.final_samples
    _stale_results(run_dir)

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # delivered as KeyboardInterrupt before the samples are drawn
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(run_record, "final_samples", interrupted)
        try:
            code = run_entry(train, compose_train(["trainer.max_steps=8"], run_dir))
        except KeyboardInterrupt:
            pytest.fail("the Ctrl-C escaped train(): the process would die of SIGINT without results.json")
        assert code == EXIT_INTERRUPTED
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["interrupted_in"] == "final samples", results
    assert results["global_step"] == 8 and "val/loss" in results and "train/loss" in results
    assert "sample/final_time_s" not in results and not (run_dir / "samples" / "final.png").exists()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    assert run_entry(train, compose_train(["trainer.max_steps=8"], run_dir)) == EXIT_OK
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and "interrupted_in" not in results and results["global_step"] == 8
    assert (run_dir / "samples" / "final.png").exists()


def test_sigterm_while_fit_starts_stops_at_the_first_batch_with_a_checkpoint(tmp_path, monkeypatch):
    """A SIGTERM before Lightning installs its handler (which starts with a clean record) is not
    lost: fit stops after the first batch, saves last.ckpt, and the run is preempted."""
    real = ncsn.training.score_model.ScoreModel.on_fit_start

    def on_fit_start(self):  # the moment: inside fit, before its loops and Lightning's handler
        os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    monkeypatch.setattr(ncsn.training.score_model.ScoreModel, "on_fit_start", on_fit_start)
    run_dir = tmp_path / "run"
    assert run_entry(train, compose_train(["trainer.max_steps=50"], run_dir)) == EXIT_OK
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "preempted" and results["preempted_in"] == "training", results
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the run's handler is gone with it


@pytest.mark.slow
def test_ctrl_c_to_every_process_while_ddp_starts_exits_130_and_leaves_no_process(tmp_path):
    """strategy=ddp (2 CPU ranks, in a subprocess: Lightning re-runs the command for rank 1).
    SIGINT to the whole process group while rank 0 waits in the rendezvous and rank 1 is still
    starting: rank 1 must not die before it joins (rank 0 cannot be interrupted there, and
    Lightning's observer used to SIGKILL it: exit -9, no record). Exit 130, results.json says
    interrupted, no process of the group left."""
    run_dir, log = tmp_path / "run", tmp_path / "out.log"
    args = [sys.executable, str(ROOT / "train.py"), *TOY, "trainer.max_steps=100000", f"hydra.run.dir={run_dir}"]
    args += ["trainer.strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while "GLOBAL_RANK: 0" not in log.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert "GLOBAL_RANK: 1" not in log.read_text(), "rank 1 joined before the signal: the moment was missed"
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert code == EXIT_INTERRUPTED, log.read_text()[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["status"] == "interrupted"
    deadline = time.time() + 30
    while (left := group_members(proc.pid)) and time.time() < deadline:
        time.sleep(0.2)
    assert not left, left


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    found = []
    for stat in (p / "stat" for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("rank_0", ["stopping", "waiting"])
def test_ranks_observer_kills_every_process_unless_rank_0_is_stopping(tmp_path, rank_0):
    """The observer of the child ranks (``ranks.RanksObserver``): once a child ends with a non-zero
    status, SIGKILL the other children and rank 0 (which may wait for the dead one in a collective
    forever), unless rank 0 is stopping by itself (its Ctrl-C handling kills the children; it must
    live on to record the run)."""
    script = tmp_path / "rank0.py"
    script.write_text(
        textwrap.dedent(f"""
        import subprocess, sys, threading, time
        from ncsn.workflow.ranks import RanksObserver
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
        print(sleeper.pid, flush=True)
        stopping = threading.Event()
        if {rank_0!r} == "stopping":
            stopping.set()
        observer = RanksObserver([sleeper, failing], stopping, period_s=0.05)
        observer.start()
        failing.wait()
        observer.join(timeout=20)
        sleeper.kill()
        print("rank 0 recorded the run", flush=True)
    """)
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    sleeper = int(res.stdout.split()[0])
    if rank_0 == "stopping":
        assert res.returncode == 0 and "rank 0 recorded the run" in res.stdout, res.stderr
    else:
        assert res.returncode == -signal.SIGKILL and "recorded" not in res.stdout, res.stderr
        deadline = time.time() + 10
        while sleeper in group_members(os.getpgid(0)) and time.time() < deadline:
            time.sleep(0.1)
        assert sleeper not in group_members(os.getpgid(0))  # the other child was killed too
