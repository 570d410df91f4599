"""What a run tells its user and its sweeper at the end: the best FID of a training run, the
console summary of train.py and sample.py (rank 0), and the objective train.py returns to a
Hydra sweeper (Optuna)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from hydra.core.hydra_config import HydraConfig


def best_metric(metrics_csv: str | Path, key: str = "fid") -> dict:
    """{"<key>/best": minimum of the column, "<key>/best_step": its step (trainer.global_step)}
    from a metrics.csv ({} when the column is absent or empty). Ties: the earliest step."""
    path = Path(metrics_csv)
    if not path.is_file():
        return {}
    best = None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            value, step = row.get(key), row.get("step")
            if value in (None, "") or step in (None, ""):
                continue
            try:
                v, s = float(value), int(float(step))
            except ValueError:
                continue
            if math.isfinite(v) and (best is None or v < best[0]):
                best = (v, s)
    return {} if best is None else {f"{key}/best": best[0], f"{key}/best_step": best[1]}


OPTUNA_SWEEPER = "hydra_plugins.ncsn_optuna.NcsnOptunaSweeper"  # conf/hydra/sweeper/ncsn_optuna.yaml


def in_optuna_sweep() -> bool:
    """True inside a job launched by the Optuna sweeper (``hydra/sweeper=ncsn_optuna``)."""
    if not HydraConfig.initialized():
        return False
    return str(HydraConfig.get().sweeper.get("_target_", "")) == OPTUNA_SWEEPER


def in_sweep() -> bool:
    """True inside a job of a ``-m`` sweep (any sweeper)."""
    return HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN"


def sweep_objective(results: dict, key: str) -> float | None:
    """The number train.py returns to Hydra (``objective`` key): ``results[key]`` as a float, or
    None when the run has no such value (a sweeper then records the trial as failed)."""
    value = results.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def plural(n: int, noun: str) -> str:
    """'1 grid', '2 grids'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _files(directory: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in directory.glob(pattern)) if directory.is_dir() else []


def _fid_row(script: str, results: dict) -> str | None:
    """'best 31.4 at step 3000, final 33.0' (and sample.py's denoised / no_denoise variants)."""
    parts = []
    if "fid/best" in results:
        parts.append(f"best {_fmt(results['fid/best'])} at step {results.get('fid/best_step', '?')}")
    if "fid" in results:
        parts.append(f"final {_fmt(results['fid'])}")
    if script == "sample.py":
        parts += [f"{k.split('/')[1]} {_fmt(results[k])}" for k in ("fid/denoised", "fid/no_denoise") if k in results]
    return ", ".join(parts) or None


def _train_file_rows(run_dir: Path) -> list[tuple[str, str]]:
    """train.py's files: the sample grids, the checkpoints, metrics.csv and results.json."""
    rows = []
    samples, ckpts = run_dir / "samples", run_dir / "checkpoints"
    if samples.is_dir():
        grids = _files(samples, "epoch*.png")
        extra = [n for n in ("final.png", "toy_figure.png") if (samples / n).is_file()]
        rows.append(("samples", f"{samples}  ({', '.join(extra + [plural(len(grids), 'grid')])})"))
    if ckpts.is_dir():
        names = _files(ckpts, "*.ckpt")
        shown = [n for n in ("last.ckpt", "best.ckpt") if n in names]
        rows.append(("checkpoints", f"{ckpts}  ({', '.join(shown + [plural(len(names), 'file')])})"))
    rows += [(name, str(run_dir / name)) for name in ("metrics.csv", "results.json") if (run_dir / name).is_file()]
    return rows


def _sample_file_rows(run_dir: Path, results: dict) -> list[tuple[str, str]]:
    """sample.py's mode and the files it wrote."""
    files = [p.name for p in sorted(run_dir.iterdir()) if p.is_file()] if run_dir.is_dir() else []
    mode = [("mode", str(results["mode"]))] if "mode" in results else []
    return [*mode, ("files", ", ".join(files))]


def summary_lines(script: str, run_dir: str | Path, results: dict) -> list[str]:
    """The end-of-run lines of ``train.py`` / ``sample.py`` (plain text, one fact a line)."""
    run_dir = Path(run_dir).resolve()
    status = results.get("status", "finished")
    if status == "skipped":  # a finished job of a re-run sweep (workflow.sweep_jobs): nothing ran
        return [f"── {script} finished, skipped: {run_dir}"]
    where = [
        f"{name} {results[key]}" for key, name in (("global_step", "global step"), ("epoch", "epoch")) if key in results
    ]
    rows = [("run directory", str(run_dir)), ("status", status + (f" ({', '.join(where)})" if where else ""))]
    fid = _fid_row(script, results)
    rows += [("FID", fid)] if fid else []
    rows += [(key, _fmt(results[key])) for key in ("val/loss", "train/loss") if key in results]
    rows += [("error", str(results["error"]))] if "error" in results else []
    rows += _train_file_rows(run_dir) if script == "train.py" else _sample_file_rows(run_dir, results)
    width = max(len(k) for k, _ in rows)
    title = f"── {script} {status} "
    return [title + "─" * max(0, 60 - len(title)), *(f"{k:<{width}}  {v}" for k, v in rows)]


def print_run_summary(script: str, run_dir: str | Path, results: dict) -> None:
    """Print the end-of-run lines (call on rank 0 only: the other ranks return no results)."""
    from .console import to_log_files

    lines = summary_lines(script, run_dir, results)
    print("\n".join(lines), flush=True)
    to_log_files(lines)  # <job>.log holds the summary too


class JobFailed(RuntimeError):
    """A job of a ``-m`` sweep failed (bad config, diverged, no objective): raised instead of
    exiting, so Hydra records the job as failed and the sweep goes on with its other jobs (the
    sweepers then print which failed and exit non-zero: ``sweep_jobs.sweep_summary``; Optuna
    records the trial as FAIL, ``hydra.sweeper.max_failure_rate``)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def finish_job(script: str, cfg, code: int, results: dict, run_dir: str | Path) -> float | None:
    """The end of ``train.py`` / ``sample.py``'s ``main``: print the summary (the process that
    holds the results: rank 0), then exit with ``code`` when it is not 0 (inside a ``-m`` sweep:
    raise ``JobFailed``, so the other jobs still run; Ctrl-C (130) stops the sweep), exit 0 after
    a SIGTERM (``preempted``: a sweep stops there too), else return the sweep objective
    (``cfg.objective``, a key of results.json) to Hydra."""
    import sys

    if results:
        print_run_summary(script, run_dir, results)
    if results.get("status") == "preempted":
        # SIGTERM (a cluster's preemption) stops the process, not only this job: under -m Hydra
        # would otherwise start the next job of the sweep. Exit 0: rerun the same command to resume
        sys.exit(0)
    sweep = in_sweep()
    if code:
        if sweep and code != 130:
            raise JobFailed(f"{script} exited with status {code}" + _reason(results), code)
        sys.exit(code)
    key = cfg.get("objective")
    if key is None:
        return None
    value = sweep_objective(results, key)
    if value is None and in_optuna_sweep() and results:
        raise JobFailed(f"objective={key!r}: results.json has no finite value for it", 1)
    return value


def _reason(results: dict) -> str:
    return f": {results['error']}" if results.get("error") else " (see the error above)"


def record_preempted_start_up(run_dir: Path, lock) -> dict:
    """SIGTERM before training started: results.json says so (status ``preempted``,
    ``preempted_in`` start-up, the step of the checkpoint a rerun resumes from), so no results.json
    of an earlier run stays behind. Written only by the process that holds the run directory's
    lock (``lock``), or can take it at once."""
    import json
    import logging

    import torch

    from .config import ConfigError, atomic_write_text
    from .ranks import is_run_dir_writer
    from .runlock import RunLock

    results: dict = {"status": "preempted", "preempted_in": "start-up"}
    if not is_run_dir_writer():
        return results
    try:
        held = lock or RunLock(run_dir).acquire()
    except ConfigError:  # in use by another process, or unwritable: not ours to write
        return results
    try:
        last = run_dir / "checkpoints" / "last.ckpt"
        step: int | None = 0
        if last.is_file():
            try:
                step = int(torch.load(last, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))
            except Exception:  # noqa: BLE001 - an unreadable checkpoint: the rerun will say so
                step = None
        results["global_step"] = step
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2, sort_keys=True))
    finally:
        if held is not lock:
            held.release()
    logging.getLogger(__name__).warning(
        "SIGTERM before training started (at global step %s); run the same command again", step
    )
    return results
