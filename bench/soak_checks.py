"""The checks of bench/soak.py: where a sweep's jobs are, and whether a soaked job equals its
straight run (weights, metrics.csv, W&B, results.json, temporary files)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import torch

from ncsn.training.wandb_offline import read_offline_run

SEEDS = (1, 2, 3)  # the sweep: one job per seed


def job_dir(sweep: Path, seed: int) -> Path:
    """The run directory of the sweep's job with this seed (however Hydra's sweep.subdir names it;
    a path that does not exist before the job has written its config)."""
    for config in sweep.glob("*/.hydra/config.yaml"):
        if re.search(rf"^seed: {seed}$", config.read_text(), re.MULTILINE):
            return config.parent.parent
    return sweep / f"seed{seed}-not-started"


def read_rows(path: Path) -> list[dict]:
    """metrics.csv rows as {column: value} of their non-empty cells (step as int); [] if absent."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [{k: v for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    for r in rows:
        r["step"] = int(float(r["step"]))
    return rows


def max_abs_diff(a, b, where: str = "") -> tuple[float, str]:
    """Largest |a - b| over the tensors of two nested structures (inf on a structural mismatch)."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            return float("inf"), where
        if not a.is_floating_point():
            return (0.0 if torch.equal(a, b) else float("inf")), where
        return ((a.double() - b.double()).abs().max().item() if a.numel() else 0.0), where
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return float("inf"), f"{where} keys"
        return max((max_abs_diff(a[k], b[k], f"{where}.{k}") for k in a), default=(0.0, where))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return float("inf"), f"{where} length"
        return max((max_abs_diff(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))), default=(0.0, where))
    return (0.0 if a == b else float("inf")), where


def check_weights(job: Path, ref: Path, atol: float) -> str | None:
    a = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    b = torch.load(ref / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    if a["global_step"] != b["global_step"]:
        return f"last.ckpt at step {a['global_step']}, straight run at {b['global_step']}"
    diff, where = max(
        max_abs_diff(a["state_dict"], b["state_dict"], "state_dict"),
        max_abs_diff(a["optimizer_states"], b["optimizer_states"], "optimizer"),
    )
    return None if diff <= atol else f"max abs diff {diff:.3g} at {where} (> {atol})"


def comparable(row: dict) -> tuple:
    """A metrics row without its timings (they differ between any two runs)."""
    return tuple(sorted((k, v) for k, v in row.items() if "time" not in k))


def check_metrics(job: Path, ref: Path) -> str | None:
    rows, ref_rows = read_rows(job / "metrics.csv"), read_rows(ref / "metrics.csv")
    keys = [(r["step"], tuple(sorted(k for k in r if k not in ("step", "epoch")))) for r in rows]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        return f"row logged twice: step {dup[0]} {list(dup[1])}"
    steps = [r["step"] for r in rows]
    if steps != sorted(steps):
        return f"steps out of order: {next(f'{a} then {b}' for a, b in zip(steps, steps[1:]) if b < a)}"
    mine, theirs = [comparable(r) for r in rows], [comparable(r) for r in ref_rows]
    if mine != theirs:
        missing = [dict(r) for r in theirs if r not in mine][:1]
        extra = [dict(r) for r in mine if r not in theirs][:1]
        return f"differs from the straight run: missing {missing}, different/extra {extra}"
    return None


def wandb_runs(job: Path) -> list[dict]:
    """The job's offline W&B runs, in start order (a file a kill left with no records is skipped)."""
    runs = [read_offline_run(f) for f in sorted(job.glob("wandb/offline-run-*/run-*.wandb"))]
    return [r for r in runs if r["run"]]


def check_wandb_id(job: Path, want_id: str) -> str | None:
    runs = wandb_runs(job)
    ids = sorted({r["run"]["id"] for r in runs})
    return None if ids == [want_id] else f"{len(runs)} offline runs with ids {ids} (expected only {want_id})"


def wandb_missing_steps(job: Path, max_steps: int) -> list[int]:
    """Steps 1..max_steps at which none of the job's W&B runs holds train/loss."""
    seen = {int(row["trainer/global_step"]) for r in wandb_runs(job) for row in r["history"] if "train/loss" in row}
    return sorted(set(range(1, max_steps + 1)) - seen)


def check_wandb_history(job: Path, max_steps: int) -> str | None:
    missing = wandb_missing_steps(job, max_steps)
    return f"train/loss missing in W&B at {len(missing)} steps: {missing[:6]}..." if missing else None


def check_results(job: Path, max_steps: int) -> str | None:
    import json

    try:
        res = json.loads((job / "results.json").read_text())
    except (OSError, ValueError) as e:
        return f"results.json unreadable: {e}"
    if res.get("status") != "finished" or res.get("global_step") != max_steps:
        return f"status {res.get('status')} at global_step {res.get('global_step')} (expected finished at {max_steps})"
    return None


def sweep_complete(sweep: Path, max_steps: int) -> bool:
    """Every job of the sweep has finished at ``max_steps`` (the next signal starts a new round)."""
    for seed in SEEDS:
        try:
            results = json.loads((job_dir(sweep, seed) / "results.json").read_text())
        except (OSError, ValueError, AssertionError, StopIteration, IndexError):
            return False
        if results.get("status") != "finished" or results.get("global_step") != max_steps:
            return False
    return True


def check_temp_files(job: Path) -> str | None:
    left = [str(p.relative_to(job)) for p in job.rglob("*") if ".tmp" in p.name]
    return f"temporary files left: {left[:5]}" if left else None
