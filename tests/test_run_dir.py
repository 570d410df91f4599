"""One writer per run directory, exact resume from any checkpoint, honest status, metrics without
duplicates, and bad input that writes nothing (issue 15)."""

import csv
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, run_cli
from hydra import compose, initialize_config_dir
from test_resilience import TOY, compose_train, net_weights

import ncsn.core.losses
from ncsn.training.loggers import LOGGING_STEP_OFFSET as OFF  # a row's step: the global step after its batch
from ncsn.workflow.config import ConfigError
from ncsn.workflow.entry import EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OK, run_entry
from ncsn.workflow.runlock import LOCK_NAME, RunLock
from ncsn.workflow.train import train

ENV = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def train_steps(path):
    return [int(r["step"]) for r in rows(path) if r.get("train/loss")]


def val_rows(path):
    return [(int(r["step"]), round(float(r["val/loss"]), 5)) for r in rows(path) if r.get("val/loss")]


def assert_same_weights(a_path, b_path):
    a, b = net_weights(a_path), net_weights(b_path)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=1e-5), k


def start_cli(*overrides):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_rows(metrics, n, proc, limit=300):
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= n + 1:
            return
        time.sleep(0.1)


# -- one writer per run directory ------------------------------------------------------------
def hold_lock(run_dir):
    """Another process that holds ``run_dir``'s lock (it prints "held" once it does)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, time; sys.path.insert(0, {str(ROOT / 'src')!r})\n"
            "from ncsn.workflow.runlock import RunLock\n"
            f"RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_run_lock_refuses_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"is in use by pid {holder.pid} on host "):
            RunLock(run_dir).acquire()
    finally:
        holder.kill()  # SIGKILL: no release; the file stays, naming a dead process
        holder.wait()
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == holder.pid
    lock = RunLock(run_dir).acquire()  # stale: taken over
    assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run_dir / LOCK_NAME).exists()


@pytest.mark.slow
def test_second_process_on_the_same_run_dir_is_refused_at_once(tmp_path):
    run_dir = tmp_path / "run"
    common = [*TOY, "trainer.max_steps=100000", "callbacks.checkpoint.every_n_train_steps=100000"]
    first = start_cli(*common, f"hydra.run.dir={run_dir}")
    try:
        wait_rows(run_dir / "metrics.csv", 5, first)
        assert first.poll() is None, first.stderr.read()[-2000:]
        second = run_cli("train.py", *common, f"hydra.run.dir={run_dir}")
        assert second.returncode == EXIT_BAD_INPUT, second.stderr[-2000:]
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"is in use by pid {first.pid} on host" in errors[0], second.stderr[-2000:]
        assert "error: run directory" in (run_dir / "train.log").read_text()  # the refusal is in the log too
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0
    assert not (run_dir / LOCK_NAME).exists()  # released
    steps = train_steps(run_dir / "metrics.csv")
    assert steps == list(range(OFF, len(steps) + OFF))  # one writer: every step once, in order
    assert not list((run_dir / "checkpoints").glob("*-v1.ckpt"))


# -- exact resume from any checkpoint ---------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("every, b_from, c_from", [(4, 8, 16), (3, 6, 12)])
def test_resume_chain_a_b_c_equals_the_straight_run(tmp_path, every, b_from, c_from):
    """A straight 24 steps (4 batches per epoch, validation every 2 epochs); B resumes from A's
    checkpoint at b_from, C from B's at c_from. every=4: both after an epoch's last batch with its
    validation still to run; every=3: mid-epoch (6), and after the last batch of an epoch without
    validation (12). Same weights, and validation at the same steps with the same values."""
    common = ["trainer.max_steps=24", f"callbacks.checkpoint.every_n_train_steps={every}"]
    a, b, c = tmp_path / "A", tmp_path / "B", tmp_path / "C"
    assert run_entry(train, compose_train(common, a)) == EXIT_OK
    assert run_entry(train, compose_train([*common, f"ckpt_path={a}/checkpoints/step{b_from:07d}.ckpt"], b)) == EXIT_OK
    assert run_entry(train, compose_train([*common, f"ckpt_path={b}/checkpoints/step{c_from:07d}.ckpt"], c)) == EXIT_OK
    for d in (b, c):
        assert_same_weights(a / "checkpoints" / "last.ckpt", d / "checkpoints" / "last.ckpt")
        # B's own checkpoints resume like A's: the same loop state
        for ckpt in sorted(d.glob("checkpoints/step*.ckpt")):
            mine, straight = (torch.load(p, weights_only=True)["loops"] for p in (ckpt, a / "checkpoints" / ckpt.name))
            assert mine["fit_loop"]["epoch_progress"] == straight["fit_loop"]["epoch_progress"], ckpt.name
    # a validation after the checkpoint's last batch (logged at its step) is run by the resumed process
    assert val_rows(b / "metrics.csv") == [v for v in val_rows(a / "metrics.csv") if v[0] >= b_from - 1 + OFF]
    assert val_rows(c / "metrics.csv") == [v for v in val_rows(a / "metrics.csv") if v[0] >= c_from - 1 + OFF]
    assert train_steps(c / "metrics.csv") == list(range(c_from + OFF, 24 + OFF))


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_the_straight_run(tmp_path):
    """Three SIGKILLs at random points of one run (seeded), then the same command to the end:
    metrics.csv has every training step once, in order, the validations of the straight run, and
    the final weights are the straight run's."""
    common = [*TOY, "trainer.max_steps=40", "callbacks.checkpoint.every_n_train_steps=5"]
    straight = tmp_path / "straight"
    assert run_entry(train, compose_train(common[len(TOY) :], straight)) == EXIT_OK
    run_dir = tmp_path / "run"
    metrics = run_dir / "metrics.csv"
    rng = random.Random(15)
    for _ in range(3):
        before = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        proc = start_cli(*common, f"hydra.run.dir={run_dir}")
        wait_rows(metrics, before + rng.randint(3, 15), proc)
        proc.kill()
        proc.wait()
    res = run_cli("train.py", *common, f"hydra.run.dir={run_dir}")
    assert res.returncode == EXIT_OK, res.stderr[-2000:]
    assert train_steps(metrics) == list(range(OFF, 40 + OFF))
    assert val_rows(metrics) == val_rows(straight / "metrics.csv")
    assert_same_weights(straight / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "last.ckpt")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["global_step"] == 40


def test_resume_applies_a_changed_lr_and_results_keep_the_metrics(tmp_path, caplog):
    run_dir = tmp_path / "run"
    assert run_entry(train, compose_train(["trainer.max_steps=8"], run_dir)) == EXIT_OK  # validates at step 7
    cfg = compose_train(["trainer.max_steps=10", "optim.lr=0.01", "allow_config_change=true"], run_dir)
    with caplog.at_level("WARNING"):
        assert run_entry(train, cfg) == EXIT_OK
    assert "resume: optim lr 0.001 -> 0.01" in caplog.text
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 10
    assert [g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]] == [0.01]
    results = json.loads((run_dir / "results.json").read_text())
    assert "val/loss" in results and "train/loss" in results  # val/loss from before the resume


def test_a_moved_run_directory_resumes_and_overwrites_its_own_files(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    assert run_entry(train, compose_train(["trainer.max_steps=4"], old)) == EXIT_OK
    old.rename(new)
    assert run_entry(train, compose_train(["trainer.max_steps=8"], new)) == EXIT_OK  # dirpath keys differ: not a change
    assert torch.load(new / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8
    # resuming another directory's checkpoint (step 8) into a directory that has a last.ckpt (10):
    # its files are overwritten (no last-v1.ckpt), its rows past step 8 move to metrics.dropped.csv
    other = tmp_path / "other"
    assert run_entry(train, compose_train(["trainer.max_steps=10"], other)) == EXIT_OK
    cfg = compose_train(["trainer.max_steps=12", f"ckpt_path={new}/checkpoints/last.ckpt"], other)
    assert run_entry(train, cfg) == EXIT_OK
    assert not list(other.glob("checkpoints/*-v*.ckpt"))
    assert torch.load(other / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 12
    dropped = (other / "metrics.dropped.csv").read_text()
    assert "# dropped when resuming at step 8" in dropped
    assert train_steps(other / "metrics.csv") == list(range(OFF, 12 + OFF))


# -- honest status ------------------------------------------------------------------------------
@pytest.mark.slow
def test_ctrl_c_is_recorded_as_interrupted_exit_130_without_final_samples(tmp_path):
    run_dir = tmp_path / "run"
    proc = start_cli(*TOY, "trainer.max_steps=100000", f"hydra.run.dir={run_dir}")
    wait_rows(run_dir / "metrics.csv", 5, proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted" and results["global_step"] < 100000
    assert not (run_dir / "samples" / "final.png").exists()
    assert not (run_dir / LOCK_NAME).exists()


def test_skip_past_the_limit_is_diverged_and_an_exploding_loss_warns(tmp_path, monkeypatch, capsys):
    real = ncsn.core.losses.dsm_loss
    mode = {"kind": "nan"}

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        if not torch.is_grad_enabled():
            return out
        if mode["kind"] == "nan":
            per = out.per_example.clone() * float("nan")
            return out._replace(loss=per.mean(), per_example=per)
        poisoned.calls = getattr(poisoned, "calls", 0) + 1
        scale = 1.0 if poisoned.calls < 4 else 1e5  # finite, five orders of magnitude up
        return out._replace(loss=out.loss * scale, per_example=out.per_example * scale)

    monkeypatch.setattr(ncsn.core.losses, "dsm_loss", poisoned)
    skip = tmp_path / "skip"
    cfg = compose_train(["trainer.max_steps=20", "loss.on_nonfinite=skip", "loss.max_skipped=3"], skip)
    assert run_entry(train, cfg) == EXIT_DIVERGED
    assert "more than loss.max_skipped=3" in capsys.readouterr().err
    assert json.loads((skip / "results.json").read_text())["status"] == "diverged"

    mode["kind"] = "explode"
    boom = tmp_path / "boom"
    assert run_entry(train, compose_train(["trainer.max_steps=8"], boom)) == EXIT_OK
    results = json.loads((boom / "results.json").read_text())
    assert results["status"] == "finished" and "training loss exploding" in results["warnings"][0]


# -- bad input: one line, exit 2, nothing written ------------------------------------------------
BAD = [
    (["seed=-5"], "seed=-5 is invalid: must be an integer in [0, 4294967295]"),
    (["seed=4294967296"], "seed=4294967296 is invalid"),
    (["+seeed=3"], "seeed is not a key of train.yaml"),
    (["trainer.accelerator=cpu", "trainer.precision=16-mixed"], "trainer.precision='16-mixed' is invalid on the CPU"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(overrides, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert run_entry(train, compose_train(overrides, run_dir)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert not run_dir.exists()


def test_a_text_file_as_checkpoint_is_refused_in_one_line(tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello world\n")  # torch.load: KeyError
    assert run_entry(train, compose_train([f"ckpt_path={text}"], tmp_path / "run")) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a checkpoint" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_cli_bad_input_writes_nothing_and_hydra_refusals_exit_2(tmp_path):
    from fakedata import write_cifar10

    # a bad value: Hydra made the run directory and train.log; both are removed again
    run_dir = tmp_path / "out" / "run"
    res = run_cli("train.py", "seed=-5", f"hydra.run.dir={run_dir}")
    assert res.returncode == EXIT_BAD_INPUT and res.stderr.strip().startswith("error: seed=-5"), res.stderr
    assert not run_dir.exists()
    # an unknown group option, a run directory that is a file: Hydra's message, exit 2
    res = run_cli("train.py", "model=foo", f"hydra.run.dir={run_dir}")
    assert res.returncode == EXIT_BAD_INPUT and "model/foo" in res.stderr
    afile = tmp_path / "afile"
    afile.write_text("x")
    res = run_cli("train.py", "experiment=toy_gmm", f"hydra.run.dir={afile}")
    assert res.returncode == EXIT_BAD_INPUT, res.stderr[-2000:]
    # a CIFAR-10 batch that is a malicious pickle: refused in one line, before anything is written
    data = tmp_path / "data"
    write_cifar10(data)

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    with open(data / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f, protocol=2)
    cifar = ["data=cifar10", f"data.root={data}", "fid=none", "callbacks.best=null", "data.num_workers=0"]
    res = run_cli("train.py", *cifar, "model=small_conv", f"hydra.run.dir={run_dir}")
    assert res.returncode == EXIT_BAD_INPUT, res.stderr[-3000:]
    assert res.stderr.strip().startswith("error: CIFAR-10 file is corrupt") and "refusing global" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not run_dir.exists()


def test_sample_bad_out_dir_and_foreign_group_are_one_line(tmp_path):
    src = tmp_path / "src"
    assert run_entry(train, compose_train(["trainer.max_steps=2"], src)) == EXIT_OK
    ckpt = src / "checkpoints" / "last.ckpt"
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args, message in (
        ([f"out_dir={afile}"], "is an existing file"),
        (["+model=small_conv"], "model is not a key of sample.yaml"),
    ):
        res = run_cli("sample.py", f"ckpt_path={ckpt}", *args, f"hydra.run.dir={tmp_path / 'out'}")
        assert res.returncode == EXIT_BAD_INPUT, res.stderr[-2000:]
        assert res.stderr.startswith("error: ") and message in res.stderr and len(res.stderr.splitlines()) == 1


def test_unknown_top_level_key_check_accepts_every_experiment(tmp_path):
    from ncsn.workflow.config import check_top_level_keys

    for exp in sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[f"experiment={exp}", f"paths.run_dir={tmp_path}"])
        check_top_level_keys(cfg, "train.yaml")


# -- the run directory before anything is read or written ------------------------------------
def _unwritable_cli_prefix():
    """A command prefix under which the run directory's permissions hold: as root, drop the
    capabilities that override them (setpriv); as another user, nothing to add."""
    if os.geteuid() != 0:
        return []
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: permissions cannot be enforced")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def test_read_only_run_dir_is_one_line_exit_2_and_untouched(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "note.txt").write_text("keep")
    run_dir.chmod(0o555)
    try:
        res = subprocess.run(
            [*_unwritable_cli_prefix(), sys.executable, str(ROOT / "train.py"), *TOY, f"hydra.run.dir={run_dir}"],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        run_dir.chmod(0o755)
    assert res.returncode == EXIT_BAD_INPUT, res.stderr[-2000:]
    assert res.stderr.strip().splitlines() == [
        f"error: run directory {run_dir} is not writable (Permission denied: {run_dir / LOCK_NAME}); "
        "use another hydra.run.dir"
    ]
    assert sorted(os.listdir(run_dir)) == ["note.txt"]


def test_a_full_run_dir_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """The filesystem's free space (the machine's answer, replaced) below two checkpoints."""
    import shutil

    import ncsn.workflow.resources as resources

    monkeypatch.setattr(resources.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    run_dir = tmp_path / "run"
    assert run_entry(train, compose_train([], run_dir)) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: run directory {run_dir} has 1e-06 GB free"), err
    assert not run_dir.exists()


def test_stale_temp_files_of_dead_writers_are_removed_at_start(tmp_path):
    from ncsn.workflow.runlock import remove_stale_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / ".hydra").mkdir()
    stale = [
        run_dir / "checkpoints" / f".last.ckpt.tmp{dead.pid}",
        run_dir / "checkpoints" / f".step0000004.ckpt.tmp{os.getpid()}",
        run_dir / ".hydra" / f".config.yaml.tmp{dead.pid}",
        run_dir / f".results.json.tmp{dead.pid}",
    ]
    live = run_dir / "checkpoints" / f".last.ckpt.tmp{os.getppid()}"  # a live writer's: kept
    for p in [*stale, live]:
        p.write_bytes(b"partial")
    (run_dir / "checkpoints" / "keep.ckpt").write_bytes(b"x")
    assert sorted(remove_stale_temp_files(run_dir)) == sorted(stale)
    assert live.exists() and (run_dir / "checkpoints" / "keep.ckpt").exists()
    # train.py does it at start, under the lock
    live.unlink()
    stale[0].write_bytes(b"partial")
    assert run_entry(train, compose_train(["trainer.max_steps=2"], run_dir)) == EXIT_OK
    assert not stale[0].exists()


def test_the_lock_is_taken_before_anything_of_the_run_is_read(tmp_path, capsys):
    """A second writer is told who holds the run, not what it found in the run's files."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"another architecture, or garbage")
    holder = hold_lock(run_dir)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_entry(train, compose_train([], run_dir)) == EXIT_BAD_INPUT
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"is in use by pid {holder.pid} on host" in err[0], err


def test_a_checkpoint_without_the_progress_record_resumes_with_a_warning(tmp_path, caplog):
    from ncsn.training.resume import PROGRESS_KEY

    run_dir = tmp_path / "run"
    assert run_entry(train, compose_train(["trainer.max_steps=5"], run_dir)) == EXIT_OK
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    del ckpt[PROGRESS_KEY]  # a checkpoint of an older version
    torch.save(ckpt, last)
    assert run_entry(train, compose_train(["trainer.max_steps=7"], run_dir)) == EXIT_OK
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 7
    assert [w for w in results["warnings"] if f"has no {PROGRESS_KEY} record" in w and "may differ" in w]
    assert f"has no {PROGRESS_KEY} record" in caplog.text
