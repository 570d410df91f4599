"""Hydra multirun: a real sweep on the toy mixture, compare's table, multirun + DDP, W&B offline."""

import json

import pytest
from conftest import job_dirs, run_cli, sweep_job
from omegaconf import OmegaConf

from ncsn.compare import compare

TOY_FAST = [
    "experiment=toy_gmm",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "sampler.n_samples=256",
    "trainer.check_val_every_n_epoch=5",
    "callbacks.samples.every_n_epochs=100",
]


@pytest.mark.slow
def test_toy_sweep_annealing_beats_single_level_in_compare(tmp_path):
    """4 jobs: num_scales 1 vs 10 x two step sizes. The annealed runs recover the mixture weights."""
    sweep = tmp_path / "toy-ablation-42"
    res = run_cli(
        "train.py",
        "-m",
        *TOY_FAST,
        "sweep=toy_annealing",
        "trainer.max_steps=1500",
        f"hydra.sweep.dir={sweep}",
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = job_dirs(sweep)
    assert len(jobs) == 4
    table = compare(sweep, metric="toy/weight_error")
    assert set(table.varying) >= {"sigmas.num_scales", "sampler.step_lr"}
    errors = {}
    for row in table.rows:
        errors.setdefault(row["sigmas.num_scales"], []).append(row[table.final_col])
    assert max(errors[10]) < min(errors[1]), errors
    assert max(errors[10]) < 0.1
    assert len(list(tmp_path.iterdir())) == 1  # one sweep directory
    # W&B (offline): the jobs are grouped by the sweep directory and named by the keys that vary
    for job in jobs:
        blob = next(job.glob("wandb/offline-run-*/run-*.wandb")).read_bytes()
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        assert b"toy-ablation-42" in blob and b"num_scales=" in blob and "sigmas.num_scales=" in overrides


@pytest.mark.slow
def test_multirun_with_ddp_runs_each_job_once_on_every_rank(tmp_path):
    """python train.py -m ... trainer.devices=2 trainer.strategy=ddp (gloo, CPU): each job's ranks
    record the same resolved config and there is one sweep directory (Lightning issue 11300)."""
    sweep = tmp_path / "sweep"
    res = run_cli(
        "train.py",
        "-m",
        *TOY_FAST,
        "trainer.max_steps=4",
        "sampler.n_steps_each=2",
        "sigmas.num_scales=2,3",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["sweep"]
    jobs = [sweep_job(sweep, f"sigmas.num_scales={n}") for n in (2, 3)]  # named by their settings
    assert job_dirs(sweep) == sorted(jobs)
    for job, num_scales in zip(jobs, (2, 3)):
        rank0 = OmegaConf.load(job / ".hydra" / "config.yaml")
        rank1 = OmegaConf.load(job / ".hydra" / "config.rank1.yaml")
        assert rank0 == rank1 and rank0.sigmas.num_scales == num_scales
        assert json.loads((job / "results.json").read_text())["global_step"] == 4


SECRET = "k3y-0f-a-ser1ous-s3cret-0123456789abcdef"


@pytest.mark.slow
def test_wandb_offline_run_records_metrics_and_images(tmp_path):
    run_dir = tmp_path / "run"
    res = run_cli(
        "train.py",
        "experiment=toy_gmm",
        "trainer.max_steps=40",
        "trainer.check_val_every_n_epoch=1",
        "callbacks.samples.every_n_epochs=1",
        "sampler.n_samples=32",
        "sampler.n_steps_each=2",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
        env_extra={"WANDB_MODE": "offline", "WANDB_API_KEY": ""},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    blob = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (b"val/loss", b"train/loss", b"samples"):
        assert key in blob
    assert list((runs[0] / "files" / "media" / "images").glob("samples_*.png"))
    # no credentials or environment secrets in configs, logs, metrics or checkpoints
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_slurm_launcher_config_starts_one_task_per_device():
    from conftest import ROOT
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "trainer.devices=4", "trainer.num_nodes=2", "trainer.strategy=ddp"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.gpus_per_node == 4 and launcher.nodes == 2
    assert launcher.signal_delay_s > 0 and launcher.max_num_timeout > 0


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_sweep_and_the_sweep_says_so(tmp_path):
    """-m optim.lr=-1,0.001: the first job is refused (exit 2 of its own), the second still trains;
    the sweep ends with one line per job, the compare command, and exit status 2."""
    from conftest import TINY_DIGITS

    sweep = tmp_path / "sweep"
    res = run_cli(
        "train.py", "-m", *TINY_DIGITS, "trainer.max_steps=3", "optim.lr=-1,0.001", f"hydra.sweep.dir={sweep}"
    )
    assert res.returncode == 2, res.stderr[-3000:]
    good = sweep_job(sweep, "optim.lr=0.001")
    assert json.loads((good / "results.json").read_text())["status"] == "finished"
    assert (sweep / "multirun.yaml").is_file()  # a job accepted the command
    out = res.stdout
    assert "── sweep: 2 jobs (1 failed, 1 finished)" in out
    assert "optim.lr=-1" in out and "failed: train.py exited with status 2" in out
    assert f"compare: python -m ncsn.compare {sweep}" in out
    assert "error: optim.lr=-1" in res.stderr
