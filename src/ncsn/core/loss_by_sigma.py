"""The file ``val_loss_by_sigma.csv``: the validation DSM loss of each noise level, keyed by sigma.

Columns ``step, level, sigma, loss, n_images``: one row per level per validation, so runs with
different noise schedules compare on the same axis (sigma, not the level index). Written by the
training callback ``ValLossBySigma``, read by it (to append) and by ``python -m ncsn.compare``.
Standard library only.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

FIELDS = ("step", "level", "sigma", "loss", "n_images")
FILENAME = "val_loss_by_sigma.csv"


def read_loss_by_sigma(path) -> list[dict]:
    """The rows of a ``val_loss_by_sigma.csv`` with numbers parsed ([] when absent; the rows read
    before a malformed one when the file is damaged)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    try:
        for r in csv.DictReader(path.open(newline="")):
            out.append(
                {
                    "step": int(r["step"]),
                    "level": int(r["level"]),
                    "sigma": float(r["sigma"]),
                    "loss": float(r["loss"]),
                    "n_images": int(r.get("n_images") or 0),
                }
            )
    except (KeyError, ValueError, TypeError):
        return out
    return out


def write_loss_by_sigma(path, rows: list[dict]) -> None:
    """Write ``rows`` (dicts with at least ``FIELDS``) atomically: a temporary file, then a rename,
    so a kill mid-write leaves the previous file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def by_step(rows: list[dict]) -> list[tuple[int, list[dict]]]:
    """Rows grouped by step, in step order (each group in level order)."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(int(r["step"]), []).append(r)
    return [(s, sorted(groups[s], key=lambda r: r["level"])) for s in sorted(groups)]


def last_loss_by_sigma(run_dir) -> list[dict]:
    """The last validation's rows of a run directory's ``val_loss_by_sigma.csv`` ([] when none)."""
    steps = by_step(read_loss_by_sigma(Path(run_dir) / FILENAME))
    return steps[-1][1] if steps else []
