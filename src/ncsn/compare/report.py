"""The report of a comparison: compare.md, compare.csv, compare.png, loss_by_sigma.png."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from ..loss_by_sigma import last_loss_by_sigma
from .analysis import Comparison, _key, _stats
from .jobs import Job, _natural

#: Sample grids shown beside a job's row, first found.
SAMPLE_GRIDS = ("samples/final.png", "samples.png")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return _key(v)
    return str(v).replace("|", "\\|")


def _fmt_stat(stat: tuple) -> str:
    mean, std, n = stat
    if n == 0:
        return ""
    return _fmt(mean) if not std else f"{_fmt(mean)} ± {std:.2g}"  # no "± 0" for a constant


def _setting(v) -> str:
    return "null" if v is None else _fmt(v)


def _label(settings: dict) -> str:
    return ", ".join(f"{k}={_setting(v)}" for k, v in settings.items()) or "all jobs"


def _grid(job: Job, out: Path) -> str | None:
    for rel in SAMPLE_GRIDS:
        p = job.path / rel if job.path is not None else None
        if p is not None and p.is_file():
            return os.path.relpath(p, out).replace(os.sep, "/")
    return None


def _values_of(jobs, key) -> str:
    vals = sorted({_key(j.config.get(key)) for j in jobs}, key=_natural)
    return ", ".join(_setting(json.loads(v)) for v in vals)


def to_markdown(c: Comparison, out: Path | None = None, plots: tuple = (), title: str = "") -> str:
    """The report: the ablation table (groups over seeds, sample grids beside each row), the
    plots, every job, the unfinished jobs. Image links are relative to ``out``."""
    out = Path(out) if out is not None else Path.cwd()
    lines = [f"# {title or 'Sweep comparison'}", ""]
    settings = ", ".join(f"`{k}` ({_values_of(c.jobs, k)})" for k in c.varying) or "none (one configuration)"
    lines += [
        f"{len(c.jobs)} jobs, {len(c.jobs) - len(c.unfinished)} finished"
        + (f", {len(c.skipped)} skipped (below)" if c.skipped else "")
        + f". Settings that vary: {settings}.",
        "",
        f"Sorted by the best `{c.metric}` ({'largest' if c.descending else 'smallest'} first): the "
        f"{'maximum' if c.descending else 'minimum'} over each run's evaluations (metrics.csv), with the "
        f"step where it was reached; `final` is the value at the end of the run."
        + (
            " Jobs that differ only by `seed` are aggregated: mean ± std over the n seeds."
            if "seed" in c.varying
            else ""
        ),
        "",
    ]
    gk = c.group_keys
    head = [*gk, "n", f"best {c.metric}", "at step", f"final {c.metric}", *c.headline, "final samples"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in c.groups:
        grids = []
        for j in g.jobs:
            rel = _grid(j, out)
            if rel:
                alt = f"seed {_fmt(j.config.get('seed'))}" if "seed" in c.varying else j.name
                grids.append(f'<img src="{rel}" width="120" alt="{alt}" title="{j.name}">')
        cells = [_setting(g.settings[k]) for k in gk]
        cells += [
            str(len(g.jobs)),
            _fmt_stat(g.stats[c.best_col]),
            ", ".join("-" if s is None else _fmt(s) for s in g.steps),
        ]
        cells += [_fmt_stat(g.stats[c.final_col]), *(_fmt_stat(g.stats[k]) for k in c.headline), " ".join(grids)]
        lines.append("| " + " | ".join(cells) + " |")
    if not c.groups:
        lines.append("| " + " | ".join([""] * len(head)) + " |")
    for name, caption in plots:
        lines += ["", f"![{caption}]({name})", "", f"*{caption}*"]
    lines += ["", "## Every job", "", "| " + " | ".join(c.columns) + " |", "|" + "---|" * len(c.columns)]
    lines += ["| " + " | ".join(_fmt(r[k]) for k in c.columns) + " |" for r in c.rows]
    if c.unfinished:
        lines += ["", "## Unfinished or failed jobs", ""]
        lines += [f"- `{j.name}`: {j.status}" + (f" - {j.note}" if j.note else "") for j in c.unfinished]
    if c.skipped:
        lines += ["", "## Skipped jobs (not in the tables)", ""]
        lines += [f"- `{j.name}`: {j.skipped}" for j in c.skipped]
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
    """Best (solid, error bars: std over seeds) and final (dashed) metric against each setting,
    one line per combination of the other settings. Returns False (and writes nothing) when no
    group has a numeric metric."""
    groups = [g for g in c.groups if not math.isnan(g.stats[c.best_col][0])]
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = c.group_keys or ["job"]
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes.flat, keys):
        x_of = (lambda g: g.jobs[0].name) if key == "job" else (lambda g, key=key: g.settings.get(key))
        xs = [x_of(g) for g in groups]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        cats = sorted({_fmt(x) for x in xs}, key=_natural)
        pos = (lambda x: float(x)) if numeric else (lambda x, cats=cats: cats.index(_fmt(x)))
        rest = [k for k in c.group_keys if k != key]
        lines = {}
        for g, x in zip(groups, xs):
            lines.setdefault(_label({k: g.settings.get(k) for k in rest}), []).append((pos(x), g))
        for i, (label, pts) in enumerate(sorted(lines.items(), key=lambda kv: _natural(kv[0]))):
            pts.sort(key=lambda p: p[0])
            color = colors[i % len(colors)]
            px = [p for p, _ in pts]
            best = [g.stats[c.best_col] for _, g in pts]
            final = [g.stats[c.final_col] for _, g in pts]
            yerr = [s[1] or 0.0 for s in best]
            name = "" if label == "all jobs" else f"{label}: "
            ax.errorbar(px, [s[0] for s in best], yerr=yerr, fmt="o-", capsize=3, color=color, label=f"{name}best")
            ax.plot(px, [s[0] for s in final], "s--", mfc="none", color=color, alpha=0.7, label=f"{name}final")
            for p, s in zip(px, best):
                ax.annotate(f"n={s[2]}", (p, s[0]), textcoords="offset points", xytext=(4, 4), fontsize=6)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        if numeric:
            ticks = sorted({float(x) for x in xs})
            ax.set_xticks(ticks, [_fmt(x) for x in sorted(set(xs))])
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
        ax.set_xlabel(key)
        ax.set_ylabel(c.metric)
        ax.grid(alpha=0.3)
        if len(lines) <= 6:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    seeds = " (mean ± std over seeds)" if "seed" in c.varying else ""
    fig.suptitle(f"{c.metric}: best over the run and final{seeds}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_loss_by_sigma(c: Comparison, path: Path) -> bool:
    """Every group's last-validation DSM loss per noise level against sigma (mean over seeds,
    error bars = std), one curve per group. False (nothing written) when no job has
    ``val_loss_by_sigma.csv``."""
    curves = []
    for g in c.groups:
        per_sigma = {}
        for j in g.jobs:
            for r in last_loss_by_sigma(j.path) if j.path is not None else []:
                per_sigma.setdefault(float(f"{r['sigma']:.6g}"), []).append(r["loss"])
        if not per_sigma:
            continue
        sig = sorted(per_sigma)
        stats = [_stats(per_sigma[s]) for s in sig]
        errors = [s[1] or 0.0 for s in stats] if any(s[2] > 1 for s in stats) else None
        n = max(s[2] for s in stats)
        label = _label(g.settings) + (f" (n={n})" if "seed" in c.varying else "")
        curves.append((label, sig, [s[0] for s in stats], errors))
    if not curves:
        return False
    from ..figures import save_loss_by_sigma

    save_loss_by_sigma(curves, path, title="validation DSM loss per noise level, last validation of each run")
    return True


def write_report(c: Comparison, out: Path, title: str = "") -> dict:
    """compare.md, compare.csv, compare.png, loss_by_sigma.png into ``out``; returns {name: path}.
    Written into a temporary folder inside ``out``, then moved in: a write that fails (a full
    disk) raises OSError with nothing of this report left behind (``out`` itself, when this call
    made it, is removed again)."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".compare-", dir=out))
    try:
        staged = {"csv": stage / "compare.csv"}
        write_csv(c, staged["csv"])
        plots = []
        if plot(c, stage / "compare.png"):
            staged["png"] = stage / "compare.png"
            caption = f"{c.metric} against each setting: best over the run (solid) and final (dashed)"
            plots.append(("compare.png", caption))
        if plot_loss_by_sigma(c, stage / "loss_by_sigma.png"):
            staged["loss_by_sigma"] = stage / "loss_by_sigma.png"
            plots.append(("loss_by_sigma.png", "validation DSM loss per noise level (last validation), log-log"))
        staged["md"] = stage / "compare.md"
        staged["md"].write_text(to_markdown(c, out, plots, title))
        written = {}
        for name, path in staged.items():
            os.replace(path, out / path.name)
            written[name] = out / path.name
        return written
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
