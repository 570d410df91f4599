"""``python -m ncsn.compare SWEEP_DIR [--out DIR] [--metric KEY] [--descending] [--ignore PATTERN]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
        help="where to write compare.{md,csv,png} and loss_by_sigma.png (default: SWEEP_DIR)",
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
    a = p.parse_args(argv)
    if not a.sweep_dir.is_dir():
        p.error(f"{a.sweep_dir} is not a directory")
    c = compare(a.sweep_dir, a.metric, ignore=(*IGNORE, *a.ignore), descending=a.descending)
    if not c.jobs:
        print(f"no job directories (with .hydra/config.yaml) under {a.sweep_dir}", file=sys.stderr)
        return 1
    out = a.out or a.sweep_dir
    written = write_report(c, out, title=f"Sweep {a.sweep_dir.resolve().name}")
    print((out / "compare.md").read_text(), end="")
    names = ", ".join(str(p) for p in written.values())
    print(f"\nwrote {names}" + ("" if "png" in written else f" (no plot: no finished job has {c.metric!r})"))
    return 0
