"""Compare the jobs of a sweep: ``python -m ncsn.compare SWEEP_DIR [--out DIR] [--metric KEY]``.

A sweep directory (a Hydra multirun) holds one run directory per job, possibly nested. A job
directory is any directory with ``.hydra/config.yaml``; it may also hold ``.hydra/overrides.yaml``
(the job's command-line overrides), ``metrics.csv`` (Lightning's CSVLogger), ``results.json`` (the
final metrics, a flat dict, with ``"status": "finished"``) and a ``*.log`` file.

For every job the config is flattened to dotted keys (plus one key per command-line override
that is not a config key, e.g. a config-group choice ``model=small_conv``). The keys whose value
differs between jobs are the sweep's settings, except keys under ``hydra``/``paths`` and
directory/path-like keys (``IGNORE``); keys under a varying group choice are folded into it.
Writes ``compare.md``, ``compare.csv`` and ``compare.png`` (metric against each varying key, one
line per combination of the other varying keys) and prints the Markdown table. A job without
``results.json`` (or whose status is not ``finished``) is listed as unfinished with the last line
of its log; nothing about a single job can make the tool fail.

Only the standard library, PyYAML/OmegaConf and matplotlib (no pandas).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .checks import flatten

#: fnmatch patterns of flattened config keys that are never treated as sweep settings.
IGNORE = ("hydra", "hydra.*", "paths", "paths.*", "*dir", "*_path", "*.path", "path")


@dataclass
class Job:
    name: str  # path relative to the sweep directory
    config: dict  # flattened config (+ override-only keys)
    override_keys: list  # keys named by the job's overrides, in their order
    results: dict | None  # results.json, None when absent or unreadable
    status: str  # "finished", "unfinished", or what results.json / the loader says
    note: str = ""  # for unfinished jobs: last log line, last logged step

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@dataclass
class Comparison:
    metric: str
    varying: list  # the varying config keys, override order first
    columns: list  # table columns
    rows: list  # one dict per job (finished, sorted by metric; then unfinished)
    jobs: list = field(default_factory=list)

    @property
    def unfinished(self) -> list:
        return [j for j in self.jobs if not j.finished]


# -- reading ----------------------------------------------------------------------------------
def _load_config(path: Path) -> dict:
    """The config as a plain dict; interpolations are resolved where OmegaConf can."""
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(path)
        try:
            return OmegaConf.to_container(cfg, resolve=True)
        except Exception:
            return OmegaConf.to_container(cfg, resolve=False)
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return yaml.safe_load(path.read_text()) or {}


def _override_items(path: Path) -> list:
    """[(key, value), ...] from Hydra's overrides.yaml ("+a.b=1", "~c" -> ("c", None))."""
    if not path.is_file():
        return []
    items = []
    for o in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(o).partition("=")
        try:
            value = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            pass
        items.append((key.lstrip("+~"), value))
    return items


def _last_log_line(job_dir: Path) -> str:
    logs = sorted(job_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:200]
    return ""


def _last_step(job_dir: Path) -> str:
    path = job_dir / "metrics.csv"
    if not path.is_file():
        return ""
    steps = [r.get("step") for r in csv.DictReader(path.open(newline=""))]
    steps = [s for s in steps if s not in (None, "")]
    return steps[-1] if steps else ""


def load_job(job_dir: Path, sweep_dir: Path) -> Job:
    """Read one job directory; problems become the job's status, never an exception."""
    name = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else "."
    config, keys, results, status = {}, [], None, "unfinished"
    try:
        config = flatten(_load_config(job_dir / ".hydra" / "config.yaml"))
        for key, value in _override_items(job_dir / ".hydra" / "overrides.yaml"):
            keys.append(key)
            config.setdefault(key, value)
    except Exception as e:  # noqa: BLE001 - report, don't crash
        status = f"unreadable config ({type(e).__name__})"
    res_path = job_dir / "results.json"
    if res_path.is_file():
        try:
            results = json.loads(res_path.read_text())
            if not isinstance(results, dict):
                raise ValueError("not a JSON object")
            if status == "unfinished":
                status = str(results.get("status", "finished"))
        except Exception as e:  # noqa: BLE001
            results, status = None, f"bad results.json ({type(e).__name__})"
    note = ""
    if status != "finished":
        try:
            step, line = _last_step(job_dir), _last_log_line(job_dir)
            note = "; ".join(x for x in (f"last logged step {step}" if step else "", line) if x)
        except Exception:  # noqa: BLE001
            pass
    return Job(name, config, keys, results, status, note)


def _natural(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def find_jobs(sweep_dir) -> list:
    """All job directories (those with ``.hydra/config.yaml``) under ``sweep_dir``, naturally sorted."""
    sweep_dir = Path(sweep_dir)
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    return [load_job(d, sweep_dir) for d in sorted(dirs, key=lambda d: _natural(str(d.relative_to(sweep_dir))))]


# -- analysis ---------------------------------------------------------------------------------
def _key(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def varying_keys(jobs, ignore=IGNORE) -> list:
    """Config keys whose value differs between jobs (missing counts as a value), override order
    first. Keys under a varying override key (a config-group choice such as ``model``) are dropped."""
    keys = {k for j in jobs for k in j.config}
    keys = [k for k in keys if not any(fnmatch.fnmatchcase(k, p) for p in ignore)]
    vary = {k for k in keys if len({_key(j.config.get(k)) for j in jobs}) > 1}
    vary = {k for k in vary if not any(k.startswith(g + ".") for g in vary)}
    order = {}
    for j in jobs:
        for k in j.override_keys:
            order.setdefault(k, len(order))
    return sorted(vary, key=lambda k: (order.get(k, len(order)), k))


def _num(v) -> float:
    try:
        return float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def default_metric(jobs) -> str:
    return "fid" if any(j.results and "fid" in j.results for j in jobs) else "val/loss"


def compare(sweep_dir, metric: str | None = None, ignore=IGNORE, descending: bool = False) -> Comparison:
    """Read a sweep and build the sorted comparison (no files written)."""
    jobs = find_jobs(sweep_dir)
    metric = metric or default_metric(jobs)
    vary = varying_keys(jobs, ignore)
    others = sorted(
        {
            k
            for j in jobs
            if j.results
            for k, v in j.results.items()
            if k not in (metric, "status") and not math.isnan(_num(v))
        }
    )
    columns = ["job", *vary, metric, *others, "status"]

    def order(j):
        m = _num(j.results.get(metric)) if j.results else math.nan
        return (not j.finished, math.isnan(m), -m if descending else m, _natural(j.name))

    jobs = sorted(jobs, key=order)
    rows = [
        {"job": j.name, **{k: j.config.get(k) for k in vary}, **(j.results or {}), "status": j.status} for j in jobs
    ]
    rows = [{c: r.get(c) for c in columns} for r in rows]
    return Comparison(metric, vary, columns, rows, jobs)


# -- output -----------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return _key(v)
    return str(v).replace("|", "\\|")


def to_markdown(c: Comparison) -> str:
    lines = [
        f"Sorted by `{c.metric}` ({len(c.jobs)} jobs, {len(c.unfinished)} unfinished).",
        "",
        "| " + " | ".join(c.columns) + " |",
        "|" + "---|" * len(c.columns),
    ]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in c.columns) + " |" for r in c.rows]
    if c.unfinished:
        lines += ["", "## Unfinished or failed jobs", ""]
        lines += [f"- `{j.name}`: {j.status}" + (f" - {j.note}" if j.note else "") for j in c.unfinished]
    return "\n".join(lines) + "\n"


def write_csv(c: Comparison, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(c.columns)
        w.writerows(
            [
                [_key(r[k]) if isinstance(r[k], (list, dict)) else ("" if r[k] is None else r[k]) for k in c.columns]
                for r in c.rows
            ]
        )


def plot(c: Comparison, path: Path) -> bool:
    """Metric against each varying key, one line per combination of the other varying keys.
    Returns False (and writes nothing) when no finished job has a numeric metric."""
    pts = [(j, _num(j.results.get(c.metric))) for j in c.jobs if j.finished and j.results]
    pts = [(j, m) for j, m in pts if not math.isnan(m)]
    if not pts:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = c.varying or ["job"]
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.8 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        x_of = (lambda j: j.name) if key == "job" else (lambda j, key=key: j.config.get(key))
        xs = [x_of(j) for j, _ in pts]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        cats = sorted({_fmt(x) for x in xs}, key=_natural)
        pos = (lambda x: float(x)) if numeric else (lambda x, cats=cats: cats.index(_fmt(x)))
        rest = [k for k in c.varying if k != key]
        groups = {}
        for (j, m), x in zip(pts, xs):
            label = ", ".join(f"{k}={_fmt(j.config.get(k))}" for k in rest)
            groups.setdefault(label, []).append((pos(x), m))
        for label, g in sorted(groups.items(), key=lambda kv: _natural(kv[0])):
            g.sort()
            ax.plot([p[0] for p in g], [p[1] for p in g], "o-", label=label or None)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 100:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
        ax.set_xlabel(key)
        ax.set_ylabel(c.metric)
        ax.grid(alpha=0.3)
        if any(groups) and len(groups) <= 12:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ncsn.compare", description=__doc__.split("\n")[0])
    p.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory (or any folder of run directories)")
    p.add_argument("--out", type=Path, default=None, help="where to write compare.{md,csv,png} (default: SWEEP_DIR)")
    p.add_argument(
        "--metric", default=None, help="results.json key to sort by (default: fid if present, else val/loss)"
    )
    p.add_argument("--descending", action="store_true", help="sort largest first (for higher-is-better metrics)")
    a = p.parse_args(argv)
    if not a.sweep_dir.is_dir():
        p.error(f"{a.sweep_dir} is not a directory")
    c = compare(a.sweep_dir, a.metric, descending=a.descending)
    if not c.jobs:
        print(f"no job directories (with .hydra/config.yaml) under {a.sweep_dir}", file=sys.stderr)
        return 1
    out = a.out or a.sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(c)
    (out / "compare.md").write_text(md)
    write_csv(c, out / "compare.csv")
    plotted = plot(c, out / "compare.png")
    print(md, end="")
    print(
        f"\nwrote {out / 'compare.md'}, {out / 'compare.csv'}"
        + (f", {out / 'compare.png'}" if plotted else f" (no plot: no finished job has {c.metric!r})")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
