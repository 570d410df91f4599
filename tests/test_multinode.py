"""Beyond one machine, as far as one machine can show it: two "nodes" on localhost (gloo,
trainer.num_nodes=2, one process per node started by hand as a cluster would, with NODE_RANK,
MASTER_ADDR, MASTER_PORT), and the same two processes under SLURM's environment variables as
``srun`` sets them. The run trains, is killed (both processes), resumes, writes each shared file
once, each rank trains on its own shard of every epoch, and the validation loss is within
VAL_TOLERANCE of a one-process run with the same global batch (the DSM noise differs: each rank
draws its own)."""

import csv
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT, free_port, run_cli
from test_resilience import TOY

from ncsn.training.loggers import LOGGING_STEP_OFFSET as OFF  # a row's step: the global step after its batch

VAL_TOLERANCE = 0.1  # relative difference of the final val/loss, 2 nodes vs 1 process
STEPS = 24  # 4 batches of 512 per epoch (2 x 256 per rank), validation every 2 epochs
COMMON = [*TOY, f"trainer.max_steps={STEPS}", "callbacks.checkpoint.every_n_train_steps=2", "torch_threads=1"]
NODES = ["trainer.num_nodes=2", "trainer.devices=1", "trainer.strategy=ddp", "trainer.accelerator=cpu"]


def driver(tmp_path):
    """train.py, recording which training examples each rank sees (shards/rank<r>.jsonl)."""
    (tmp_path / "conf").exists() or (tmp_path / "conf").symlink_to(ROOT / "conf")
    path = tmp_path / "driver.py"
    train_py = str(ROOT / "train.py")
    path.write_text(
        textwrap.dedent(f"""
        import json, os
        import ncsn.training.score_model as sm
        real = sm.ScoreModel.training_step
        def recording(self, batch, batch_idx):
            rows = sorted([round(float(a), 5), round(float(b), 5)] for a, b in batch[0].tolist())
            with open(os.path.join({str(tmp_path / "shards")!r}, f"rank{{self.global_rank}}.jsonl"), "a") as f:
                f.write(json.dumps([self.current_epoch, batch_idx, self.global_step, rows]) + "\\n")
            return real(self, batch, batch_idx)
        sm.ScoreModel.training_step = recording
        exec(compile(open({train_py!r}).read(), {train_py!r}, "exec"), {{"__name__": "__main__"}})
    """)
    )
    (tmp_path / "shards").mkdir(exist_ok=True)
    return path


def node_env(rank: int, port: int, slurm: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    for k in [k for k in env if k.startswith("SLURM_") or k in ("NODE_RANK", "LOCAL_RANK", "RANK", "WORLD_SIZE")]:
        del env[k]
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if slurm:  # as srun sets them for `srun --nodes=2 --ntasks-per-node=1 python train.py ...`
        env.update(
            SLURM_JOB_ID="4242",
            SLURM_JOB_NAME="ncsn",
            SLURM_NTASKS="2",
            SLURM_NNODES="2",
            SLURM_NTASKS_PER_NODE="1",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID="0",
            SLURM_NODEID=str(rank),
            SLURM_NODELIST="localhost",
        )
    else:  # as a cluster scheduler (or a person) starts one process per node
        env.update(NODE_RANK=str(rank))
    return env


def start_nodes(tmp_path, run_dir, slurm: bool):
    port = free_port()
    script = driver(tmp_path)
    return [
        subprocess.Popen(
            [sys.executable, str(script), *COMMON, *NODES, f"hydra.run.dir={run_dir}"],
            cwd=tmp_path,
            env=node_env(rank, port, slurm),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]


def rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("slurm", [False, True], ids=["node_rank", "slurm_env"])
def test_two_nodes_on_localhost_train_are_killed_resume_and_match_one_process(tmp_path, slurm):
    run_dir = tmp_path / "run"
    procs = start_nodes(tmp_path, run_dir, slurm)
    metrics, deadline = run_dir / "metrics.csv", time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if metrics.exists() and len(metrics.read_text().splitlines()) > 8:
            break
        time.sleep(0.1)
    for p in procs:  # the job is killed (preempted without warning)
        p.kill()
    for p in procs:
        p.wait()
    killed_at = len(rows(run_dir))
    assert 0 < killed_at and (run_dir / "checkpoints" / "last.ckpt").exists()
    procs = start_nodes(tmp_path, run_dir, slurm)  # the same command again: both resume
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read()[-3000:]

    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "finished" and results["global_step"] == STEPS
    steps = [int(r["step"]) for r in rows(run_dir) if r.get("train/loss")]
    assert steps == list(range(OFF, STEPS + OFF))  # each shared file written once: every step once, in order
    assert not list(run_dir.glob("checkpoints/*-v1.ckpt"))
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == [
        "config.rank1.yaml",
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]

    # each rank trained on its own half of every epoch (the last record of each step wins: steps
    # after the last checkpoint were trained again after the kill)
    seen = {}
    for rank in (0, 1):
        for line in (tmp_path / "shards" / f"rank{rank}.jsonl").read_text().splitlines():
            epoch, _, step, xs = json.loads(line)
            seen[(rank, step)] = (epoch, xs)
    assert {s for _, s in seen} == set(range(STEPS))
    for epoch in range(STEPS // 4):
        shard = {
            r: {tuple(x) for (rr, _), (e, xs) in seen.items() if rr == r and e == epoch for x in xs} for r in (0, 1)
        }
        assert len(shard[0]) == len(shard[1]) == 1024  # 4 batches of 256 points per rank
        assert not shard[0] & shard[1]  # disjoint: together the 2048 training points

    one = tmp_path / "one"
    res = run_cli("train.py", *COMMON, f"hydra.run.dir={one}")
    assert res.returncode == 0, res.stderr[-2000:]
    single = json.loads((one / "results.json").read_text())["val/loss"]
    assert abs(results["val/loss"] - single) <= VAL_TOLERANCE * single, (results["val/loss"], single)
