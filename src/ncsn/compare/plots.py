"""The plots of a comparison: the metric against each setting (compare.png), FID/KID against NFE
with one series per sampler kind (nfe.png), an Optuna search as one scatter per parameter against
the objective (compare.png), the validation loss per noise level (loss_by_sigma.png)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from ..core.loss_by_sigma import last_loss_by_sigma
from .analysis import Comparison, _stats, value_order
from .jobs import _num

#: A y (or x) range wider than this factor (max / min, all positive) is drawn on a log axis.
LOG_RANGE = 10.0
#: Files whose presence in the sweep directory marks an Optuna search.
SEARCH_FILES = ("optimization_results.yaml", "optuna.journal")


def _fmt(v) -> str:
    if v is None:
        return "null"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _label(settings: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in settings.items()) or "all jobs"


def wide(values) -> bool:
    """True when positive ``values`` span more than ``LOG_RANGE`` (max / min): a log axis shows them."""
    vals = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    return bool(vals) and min(vals) > 0 and max(vals) / min(vals) > LOG_RANGE


def _numeric(xs) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid_axes(plt, n: int):
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4 * nrows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def _x_axis(ax, xs, key: str) -> Callable:
    """Ticks for the setting values ``xs``: numbers at their value (log when wide, one tick per
    value, rotated), other values as categories; returns value -> position."""
    if _numeric(xs):
        if wide(xs):
            ax.set_xscale("log")
        values = sorted(set(xs), key=value_order)
        if len(values) <= 8:
            ax.set_xticks([float(x) for x in values], [_fmt(x) for x in values], rotation=30, ha="right")
            ax.minorticks_off()
        ax.set_xlabel(key)
        return float
    cats = sorted({_fmt(x) for x in xs}, key=lambda t: value_order(t))
    ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
    ax.set_xlabel(key)
    return lambda x: cats.index(_fmt(x))


def _save(fig, plt, path: Path, title: str) -> None:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(c: Comparison, path: Path) -> list:
    """Best (solid, error bars: std over seeds) and final (dashed) metric against each setting, one
    series per combination of the other settings: a line over numeric settings, markers only over
    categories (never joined). Log y when the values span more than ``LOG_RANGE``. Returns each
    panel's (setting, x scale, y scale, joined by lines); [] (nothing written) when no group has a
    numeric metric."""
    groups = [g for g in c.groups if not math.isnan(g.stats[c.best_col][0])]
    panels: list = []
    if not groups:
        return panels
    plt = _pyplot()
    keys = c.group_keys or ["job"]
    fig, axes = _grid_axes(plt, len(keys))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ys = [g.stats[k][0] for g in groups for k in {c.best_col, c.final_col}]
    for ax, key in zip(axes, keys):
        xs = [g.jobs[0].name if key == "job" else g.settings.get(key) for g in groups]
        pos = _x_axis(ax, xs, key)
        joined = _numeric(xs)
        rest = [k for k in c.group_keys if k != key]
        series: dict[str, list] = {}
        for g, x in zip(groups, xs):
            series.setdefault(_label({k: g.settings.get(k) for k in rest}), []).append((pos(x), g))
        for i, (label, pts) in enumerate(sorted(series.items(), key=lambda kv: value_order(kv[0]))):
            pts.sort(key=lambda p: p[0])
            color = colors[i % len(colors)]
            px = [p for p, _ in pts]
            best = [g.stats[c.best_col] for _, g in pts]
            name = "" if label == "all jobs" else f"{label}: "
            what = "" if c.single else "best"
            ax.errorbar(
                px,
                [s[0] for s in best],
                yerr=[s[1] or 0.0 for s in best],
                fmt="o-" if joined else "o",
                capsize=3,
                color=color,
                label=f"{name}{what}".rstrip(": ") or c.metric,
            )
            if not c.single:
                final = [g.stats[c.final_col][0] for _, g in pts]
                ax.plot(px, final, "s--" if joined else "s", mfc="none", color=color, alpha=0.7, label=f"{name}final")
            for p, s in zip(px, best):
                ax.annotate(f"n={s[2]}", (p, s[0]), textcoords="offset points", xytext=(4, 4), fontsize=6)
        if wide(ys):
            ax.set_yscale("log")
        ax.set_ylabel(c.metric)
        ax.grid(alpha=0.3, which="both")
        if len(series) <= 6:
            ax.legend(fontsize=7)
        panels.append((key, ax.get_xscale(), ax.get_yscale(), joined))
    seeds = " (mean ± std over seeds)" if c.seed_keys else ""
    _save(fig, plt, path, f"{c.metric}{'' if c.single else ': best over the run and final'}{seeds}")
    return panels


def plot_nfe(c: Comparison, path: Path, kind_keys: tuple = ("sampler", "sampler.kind")) -> dict:
    """A sampler sweep: the metric (and ``kid`` when present) against the number of network
    evaluations (results.json ``nfe``), one series per sampler kind (joined only within a kind,
    in NFE order). Returns {kind: [(nfe, metric), ...]}; {} (nothing written) unless one of
    ``kind_keys`` (``sampler=<kind>``; ``sampler.kind`` in sweeps of before) is a setting and
    groups have ``nfe``."""
    kind_key = next((k for k in kind_keys if k in c.group_keys), None)
    if kind_key is None:
        return {}
    metrics = [c.best_col] + [k for k in ("kid",) if k in c.headline and k != c.metric]
    pts: dict = {}
    for g in c.groups:
        nfe = _stats([_num((j.results or {}).get("nfe")) for j in g.jobs])[0]
        if not math.isnan(nfe) and not math.isnan(g.stats[c.best_col][0]):
            pts.setdefault(_fmt(g.settings.get(kind_key)), []).append((nfe, g))
    if not pts:
        return {}
    plt = _pyplot()
    fig, axes = _grid_axes(plt, len(metrics))
    for ax, m in zip(axes, metrics):
        for kind in sorted(pts, key=value_order):
            series = sorted(pts[kind], key=lambda p: p[0])
            stats = [g.stats[m] for _, g in series]
            ax.errorbar(
                [x for x, _ in series],
                [s[0] for s in stats],
                yerr=[s[1] or 0.0 for s in stats],
                fmt="o-",
                capsize=3,
                label=kind,
            )
        ys = [g.stats[m][0] for ps in pts.values() for _, g in ps]
        if wide([x for ps in pts.values() for x, _ in ps]):
            ax.set_xscale("log")
        if wide(ys):
            ax.set_yscale("log")
        ax.set_xlabel("NFE (network evaluations per sample)")
        ax.set_ylabel(c.metric if m == c.best_col else m)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, title=kind_key, title_fontsize=7)
    _save(fig, plt, path, f"{c.metric} against NFE, one series per {kind_key}")
    return {k: [(x, g.stats[c.best_col][0]) for x, g in sorted(v, key=lambda p: p[0])] for k, v in pts.items()}


def is_search(sweep_dir: Path) -> bool:
    return any((Path(sweep_dir) / name).exists() for name in SEARCH_FILES)


def plot_search(c: Comparison, path: Path) -> list:
    """An Optuna search: one scatter per searched parameter (the settings) against the objective
    (each trial's best metric), no lines; log x/y when wide; at most 6 ticks. Returns each panel's
    (parameter, points, x scale, lines drawn); [] (nothing written) without a finished trial with a
    numeric metric."""
    done = [r for r in c.rows if r.get("status") == "finished"]
    rows = [(r, v) for r in done if isinstance(v := r.get(c.best_col), (int, float))]
    keys = c.group_keys or c.varying
    if not rows or not keys:
        return []
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = _grid_axes(plt, len(keys))
    panels = []
    ys = [v for _, v in rows]
    best = min(ys) if not c.descending else max(ys)
    for ax, key in zip(axes, keys):
        xs = [r.get(key) for r, _ in rows]
        if _numeric(xs):
            ax.scatter(xs, ys, s=18, alpha=0.8)
            if wide(xs):
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(6))
            ax.set_xlabel(key)
            ax.scatter([x for x, y in zip(xs, ys) if y == best], [best], s=60, marker="*", color="C3", label="best")
        else:
            pos = _x_axis(ax, xs, key)
            ax.scatter([pos(x) for x in xs], ys, s=18, alpha=0.8)
        if wide(ys):
            ax.set_yscale("log")
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_ylabel(c.metric)
        ax.grid(alpha=0.3, which="both")
        panels.append((key, len(xs), ax.get_xscale(), len(ax.get_lines())))
    _save(fig, plt, path, f"search: {c.best_col} of each trial against each parameter ({len(rows)} trials)")
    return panels


def plot_loss_by_sigma(c: Comparison, path: Path) -> bool:
    """Every group's last-validation DSM loss per noise level against sigma (mean over seeds,
    error bars = std), one curve per group. False (nothing written) when no job has
    ``val_loss_by_sigma.csv``."""
    curves = []
    for g in c.groups:
        per_sigma: dict = {}
        for j in g.jobs:
            for r in last_loss_by_sigma(j.path) if j.path is not None else []:
                per_sigma.setdefault(float(f"{r['sigma']:.6g}"), []).append(r["loss"])
        if not per_sigma:
            continue
        sig = sorted(per_sigma)
        stats = [_stats(per_sigma[s]) for s in sig]
        errors = [s[1] or 0.0 for s in stats] if any(s[2] > 1 for s in stats) else None
        n = max(s[2] for s in stats)
        label = _label(g.settings) + (f" (n={n})" if c.seed_keys else "")
        curves.append((label, sig, [s[0] for s in stats], errors))
    if not curves:
        return False
    from ..core.figures import save_loss_by_sigma

    save_loss_by_sigma(curves, path, title="validation DSM loss per noise level, last validation of each run")
    return True
