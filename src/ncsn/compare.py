"""Compare the jobs of a sweep: ``python -m ncsn.compare SWEEP_DIR [--out DIR] [--metric KEY]``.

A sweep directory (a Hydra multirun of train.py or sample.py) holds one run directory per job,
possibly nested. A job directory is any directory with ``.hydra/config.yaml``; it may also hold
``.hydra/overrides.yaml`` (the job's command-line overrides), ``metrics.csv`` (Lightning's
CSVLogger: every evaluation of the metric during training), ``results.json`` (the final metrics,
``"status": "finished"``), ``val_loss_by_sigma.csv`` (the validation loss per noise level),
``samples/final.png`` (train.py) or ``samples.png`` (sample.py) and a ``*.log`` file.

The sweep's settings are the config keys whose value differs between jobs (the config flattened
to dotted keys, plus one key per override that is not a config key, e.g. a config-group choice
``model=small_conv``; keys under a varying group choice are folded into it). Never settings:
keys under ``hydra``/``paths``, any ``*dir``/``*dirpath`` key, any key whose value points inside
the job's or the sweep's directory (checkpoint and sample folders), and a key that only mirrors
another (its value equals a varying key's value in every job, e.g. ``callbacks.samples.seed`` =
``${seed}``; the key named on the command line is kept).

For each job: the best value of the metric (the minimum over the run's evaluations in
metrics.csv, with its step; sample.py runs have one evaluation) and the final one (results.json).
When ``seed`` varies, jobs that differ only by seed form one group: mean ± std (over seeds) and n.
Groups are sorted by the best value. Writes into the output directory (default: SWEEP_DIR):

- ``compare.md``: the ablation table with each group's final sample grids beside its row, the
  plots, a table of every job, and the unfinished or failed jobs with the last line of their log;
- ``compare.csv``: one row per job (every numeric result);
- ``compare.png``: best (solid, error bars = std over seeds) and final (dashed) metric against
  each setting, one line per combination of the other settings;
- ``loss_by_sigma.png``: the validation DSM loss against sigma of every job's (group's) last
  validation, overlaid (comparable across noise schedules: keyed by sigma, not level index).

Nothing about a single job can make the tool fail. Standard library, PyYAML/OmegaConf, matplotlib.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .checks import flatten

#: fnmatch patterns of flattened config keys that are never sweep settings.
IGNORE = ("hydra", "hydra.*", "paths", "paths.*", "*dir", "*dirpath")
#: Results shown next to the metric in the ablation table when present (the rest: per-job table).
HEADLINE = ("val/loss", "fid/denoised", "fid/no_denoise", "toy/weight_error", "sample/nfe", "nfe", "time_s")
#: Sample grids shown beside a job's row, first found.
SAMPLE_GRIDS = ("samples/final.png", "samples.png")


@dataclass
class Job:
    name: str  # path relative to the sweep directory
    config: dict  # flattened config (+ override-only keys)
    override_keys: list  # keys named by the job's overrides, in their order
    results: dict | None  # results.json, None when absent or unreadable
    status: str  # "finished", "unfinished", or what results.json / the loader says
    note: str = ""  # for unfinished jobs: last log line, last logged step
    path: Path | None = None  # the job directory
    history: dict = field(default_factory=dict)  # metrics.csv: {column: [(step, value), ...]}

    @property
    def finished(self) -> bool:
        return self.status == "finished"


@dataclass
class Comparison:
    metric: str
    varying: list  # the sweep's settings (seed included), override order first
    columns: list  # per-job table columns
    rows: list  # one dict per job (finished, sorted by the best metric; then unfinished)
    jobs: list = field(default_factory=list)  # in the order of ``rows``
    groups: list = field(default_factory=list)  # aggregated over seeds, sorted (see ``Group``)
    group_keys: list = field(default_factory=list)  # the settings without seed
    headline: list = field(default_factory=list)  # results shown in the ablation table
    descending: bool = False

    @property
    def unfinished(self) -> list:
        return [j for j in self.jobs if not j.finished]

    @property
    def best_col(self) -> str:
        return f"best {self.metric}"

    @property
    def step_col(self) -> str:
        return f"best {self.metric} step"

    @property
    def final_col(self) -> str:
        return f"final {self.metric}"


@dataclass
class Group:
    settings: dict  # the setting values shared by the group's jobs
    jobs: list  # finished jobs, in seed order
    stats: dict  # column -> (mean, std or None, n)
    steps: list  # the step of each job's best value


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


def _num(v) -> float:
    try:
        return float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def read_history(job_dir: Path) -> dict:
    """metrics.csv as {column: [(step, value), ...]} (numeric cells only, in file order)."""
    path = Path(job_dir) / "metrics.csv"
    out = {}
    if not path.is_file():
        return out
    for r in csv.DictReader(path.open(newline="")):
        step = _num(r.get("step"))
        for k, v in r.items():
            if k in ("step", "epoch") or k is None:
                continue
            x = _num(v) if v not in (None, "") else math.nan
            if not math.isnan(x):
                out.setdefault(k, []).append((None if math.isnan(step) else int(step), x))
    return out


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
    config, keys, results, status, history = {}, [], None, "unfinished", {}
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
    try:
        history = read_history(job_dir)
    except Exception:  # noqa: BLE001 - a broken metrics.csv leaves the results.json values
        history = {}
    note = ""
    if status != "finished":
        try:
            step, line = _last_step(job_dir), _last_log_line(job_dir)
            note = "; ".join(x for x in (f"last logged step {step}" if step else "", line) if x)
        except Exception:  # noqa: BLE001
            pass
    return Job(name, config, keys, results, status, note, job_dir, history)


def _natural(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def find_jobs(sweep_dir) -> list:
    """All job directories (those with ``.hydra/config.yaml``) under ``sweep_dir``, naturally sorted."""
    sweep_dir = Path(sweep_dir)
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    return [load_job(d, sweep_dir) for d in sorted(dirs, key=lambda d: _natural(str(d.relative_to(sweep_dir))))]


def read_loss_by_sigma(path) -> list[dict]:
    """The rows of a ``val_loss_by_sigma.csv`` with numbers parsed ([] when absent or unreadable)."""
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


def by_step(rows: list[dict]) -> list[tuple[int, list[dict]]]:
    """Rows grouped by step, in step order (each group in level order)."""
    groups = {}
    for r in rows:
        groups.setdefault(int(r["step"]), []).append(r)
    return [(s, sorted(groups[s], key=lambda r: r["level"])) for s in sorted(groups)]


def last_loss_by_sigma(job_dir) -> list[dict]:
    """The last validation's rows of a job's ``val_loss_by_sigma.csv`` ([] when none)."""
    steps = by_step(read_loss_by_sigma(Path(job_dir) / "val_loss_by_sigma.csv"))
    return steps[-1][1] if steps else []


# -- analysis ---------------------------------------------------------------------------------
def _key(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _points_inside(value, job: Job, sweep_dir: Path | None) -> bool:
    """A string naming the job's or the sweep's directory (or a path below them), also after the
    sweep was moved: ``<sweep dir name>/<job name>`` inside the string counts."""
    if not isinstance(value, str) or "/" not in value and os.sep not in value:
        return False
    dirs = [d for d in (job.path, sweep_dir) if d is not None]
    for d in dirs:
        d = str(Path(d).resolve())
        if value == d or value.startswith(d + "/") or value.startswith(d + os.sep):
            return True
    if sweep_dir is not None and job.name != ".":
        tail = f"{Path(sweep_dir).resolve().name}/{job.name}"
        if re.search(re.escape(tail) + r"(/|$)", value):
            return True
    return False


def varying_keys(jobs, ignore=IGNORE, sweep_dir=None) -> list:
    """The sweep's settings: config keys whose value differs between jobs (missing counts as a
    value), override order first. Dropped: ``ignore`` patterns, path values inside a job's or the
    sweep's directory, keys under a varying override key (a config-group choice such as
    ``model``), and mirrors (a key whose values equal an earlier setting's in every job; keys
    named on the command line come first and are never dropped as mirrors)."""
    keys = {k for j in jobs for k in j.config}
    keys = [k for k in keys if not any(fnmatch.fnmatchcase(k, p) for p in ignore)]
    vary = {k for k in keys if len({_key(j.config.get(k)) for j in jobs}) > 1}
    vary = {k for k in vary if not any(_points_inside(j.config.get(k), j, sweep_dir) for j in jobs)}
    vary = {k for k in vary if not any(k.startswith(g + ".") for g in vary)}
    order = {}
    for j in jobs:
        for k in j.override_keys:
            order.setdefault(k, len(order))
    ranked = sorted(vary, key=lambda k: (order.get(k, len(order)), k.count("."), len(k), k))
    kept, seen = [], {}
    for k in ranked:
        values = tuple(_key(j.config.get(k)) for j in jobs)
        if values in seen and k not in order:
            continue  # mirrors an earlier setting
        seen.setdefault(values, k)
        kept.append(k)
    return kept


def default_metric(jobs) -> str:
    has_fid = any((j.results and "fid" in j.results) or "fid" in j.history for j in jobs)
    return "fid" if has_fid else "val/loss"


def best_and_final(job: Job, metric: str, descending: bool = False) -> tuple[float, int | None, float]:
    """(best value, its step, final value) of ``metric`` for one job. Best: the minimum (maximum
    with ``descending``) over metrics.csv's evaluations, or results.json's value when the run
    logged none (sample.py); final: results.json's value, else the last evaluation."""
    final = _num(job.results.get(metric)) if job.results else math.nan
    hist = job.history.get(metric) or []
    if hist:
        pick = max if descending else min
        step, best = pick(((s, v) for s, v in hist), key=lambda sv: sv[1])
        if math.isnan(final):
            final = hist[-1][1]
        return best, step, final
    return final, None, final


def _stats(values: list) -> tuple:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return (math.nan, None, 0)
    return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


def compare(sweep_dir, metric: str | None = None, ignore=IGNORE, descending: bool = False) -> Comparison:
    """Read a sweep and build the sorted comparison (no files written)."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    metric = metric or default_metric(jobs)
    vary = varying_keys(jobs, ignore, sweep_dir)
    c = Comparison(metric, vary, [], [], descending=descending)
    group_keys = [k for k in vary if k != "seed"]
    others = sorted(
        {
            k
            for j in jobs
            if j.results
            for k, v in j.results.items()
            if k not in (metric, "status") and not math.isnan(_num(v))
        }
    )
    c.headline = [k for k in HEADLINE if k in others]
    c.columns = ["job", *vary, c.best_col, c.step_col, c.final_col, *others, "status"]
    sign = -1 if descending else 1

    def order(j):
        best = best_and_final(j, metric, descending)[0]
        return (not j.finished, math.isnan(best), sign * best if not math.isnan(best) else 0, _natural(j.name))

    jobs = sorted(jobs, key=order)
    for j in jobs:
        best, step, final = best_and_final(j, metric, descending)
        row = {"job": j.name, **{k: j.config.get(k) for k in vary}, **(j.results or {}), "status": j.status}
        row.update({c.best_col: None if math.isnan(best) else best, c.step_col: step})
        row[c.final_col] = None if math.isnan(final) else final
        c.rows.append({col: row.get(col) for col in c.columns})
    c.jobs = jobs

    groups = {}
    for j in jobs:
        if j.finished:
            groups.setdefault(tuple(_key(j.config.get(k)) for k in group_keys), []).append(j)
    for members in groups.values():
        members.sort(key=lambda j: (_num(j.config.get("seed")), _natural(j.name)))
        bfs = [best_and_final(j, metric, descending) for j in members]
        stats = {c.best_col: _stats([b for b, _, _ in bfs]), c.final_col: _stats([f for _, _, f in bfs])}
        for k in c.headline:
            stats[k] = _stats([_num((j.results or {}).get(k)) for j in members])
        settings = {k: members[0].config.get(k) for k in group_keys}
        c.groups.append(Group(settings, members, stats, [s for _, s, _ in bfs]))
    c.groups.sort(
        key=lambda g: (
            math.isnan(g.stats[c.best_col][0]),
            sign * g.stats[c.best_col][0] if not math.isnan(g.stats[c.best_col][0]) else 0,
            _natural(g.jobs[0].name),
        )
    )
    c.group_keys = group_keys
    return c


# -- output -----------------------------------------------------------------------------------
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
        f"{len(c.jobs)} jobs, {len(c.jobs) - len(c.unfinished)} finished. Settings that vary: {settings}.",
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
    from .figures import save_loss_by_sigma

    save_loss_by_sigma(curves, path, title="validation DSM loss per noise level, last validation of each run")
    return True


def write_report(c: Comparison, out: Path, title: str = "") -> dict:
    """compare.md, compare.csv, compare.png, loss_by_sigma.png into ``out``; returns {name: path}."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    write_csv(c, out / "compare.csv")
    written["csv"] = out / "compare.csv"
    plots = []
    if plot(c, out / "compare.png"):
        written["png"] = out / "compare.png"
        plots.append(("compare.png", f"{c.metric} against each setting: best over the run (solid) and final (dashed)"))
    if plot_loss_by_sigma(c, out / "loss_by_sigma.png"):
        written["loss_by_sigma"] = out / "loss_by_sigma.png"
        plots.append(("loss_by_sigma.png", "validation DSM loss per noise level (last validation), log-log"))
    md = to_markdown(c, out, plots, title)
    (out / "compare.md").write_text(md)
    written["md"] = out / "compare.md"
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ncsn.compare", description=__doc__.split("\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
