"""``python -m ncsn.compare SWEEP_DIR [--out DIR] [--metric KEY] [--descending] [--ignore PATTERN] [--rescore TAG]``.

Exit status: 0 report written; 2 one line ``error: ...`` on stderr (SWEEP_DIR missing or holding
no job directories, a report directory that cannot be written: read-only or full)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.checks import cannot_write, unwritable
from .analysis import IGNORE, compare
from .report import write_report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m ncsn.compare",
        description="Compare the jobs of a sweep: an ablation table, plots and a per-job table.",
    )
    p.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory (or any folder of run directories)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write compare.{md,csv,png}, table.{csv,tex} and the other plots (default: SWEEP_DIR)",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="results.json / metrics.csv key to sort by (default: fid if present, else val/loss)",
    )
    p.add_argument("--descending", action="store_true", help="best = largest (for higher-is-better metrics)")
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PATTERN",
        help="a config key (fnmatch pattern) that is not a setting even if it differs between jobs; repeatable",
    )
    p.add_argument(
        "--rescore",
        default=None,
        metavar="TAG",
        help="the re-score (<job>/rescore/TAG, sample.py mode=rescore) whose values the tables use; "
        "default: the one most jobs have; 'none': the training runs' own values",
    )
    a = p.parse_args(argv)
    if not a.sweep_dir.is_dir():
        what = "does not exist" if not a.sweep_dir.exists() else "is not a directory"
        return _error(f"SWEEP_DIR={str(a.sweep_dir)!r} {what}")
    out = a.out or a.sweep_dir
    key = "--out" if a.out else "SWEEP_DIR"
    problem = unwritable(out, key)
    if problem:
        return _error(problem + ("" if a.out else "; the report goes there unless --out DIR is given"))
    try:
        c = compare(a.sweep_dir, a.metric, ignore=(*IGNORE, *a.ignore), descending=a.descending, rescore=a.rescore)
    except ValueError as e:  # --rescore names a tag no finished job has
        return _error(str(e))
    if not c.jobs:
        if c.skipped:
            why = f"none of its {len(c.skipped)} job directories has a readable config ({c.skipped[0].skipped})"
        else:
            why = "no job directories (with .hydra/config.yaml) below it"
        return _error(f"SWEEP_DIR={str(a.sweep_dir)!r}: {why}")
    for j in c.skipped:
        print(f"warning: skipped job {j.name}: {j.skipped}", file=sys.stderr)
    try:
        written = write_report(c, out, title=f"Sweep {a.sweep_dir.resolve().name}", sweep_dir=a.sweep_dir)
    except OSError as e:  # e.g. the disk filled up while writing: nothing of the report is left
        return _error(cannot_write(out, key, e))
    print((out / "compare.md").read_text(), end="")
    names = ", ".join(str(p) for p in written.values())
    print(f"\nwrote {names}" + ("" if "png" in written else f" (no plot: no finished job has {c.metric!r})"))
    return 0


def _error(message: str) -> int:
    """One line on stderr; exit status 2 (a bad argument or directory)."""
    print(f"error: {message}", file=sys.stderr)
    return 2
