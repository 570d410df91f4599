"""The report of a comparison: compare.md, compare.csv (every job), the ablation table as
table.csv and table.tex (LaTeX, booktabs), and the plots (``plots``)."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .analysis import Comparison, _key, value_order
from .jobs import Job
from .plots import is_search, plot, plot_loss_by_sigma, plot_nfe, plot_search
from .significance import significance

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


def _grid(job: Job, out: Path, first: tuple = ()) -> str | None:
    for rel in (*first, *SAMPLE_GRIDS):
        p = job.path / rel if job.path is not None else None
        if p is not None and p.is_file():
            return os.path.relpath(p, out).replace(os.sep, "/")
    return None


def _values_of(jobs, key) -> str:
    vals = sorted((json.loads(v) for v in {_key(j.config.get(key)) for j in jobs}), key=value_order)
    return ", ".join(_setting(v) for v in vals)


def main_table(c: Comparison) -> tuple[list, list]:
    """The ablation table: (header, rows), one row per group; a cell is a setting value, n, a
    ``(mean, std, n)`` stat or the steps of the best values (a list)."""
    head = [*c.group_keys, "n"]
    head += [c.metric] if c.single else [f"best {c.metric}", "at step", f"final {c.metric}"]
    head += c.headline
    rows = []
    for g in c.groups:
        cells = [g.settings[k] for k in c.group_keys] + [len(g.jobs), g.stats[c.best_col]]
        cells += [] if c.single else [g.steps, g.stats[c.final_col]]
        rows.append(cells + [g.stats[k] for k in c.headline])
    return head, rows


def _cell(v, setting: bool) -> str:
    if isinstance(v, tuple):
        return _fmt_stat(v)
    if isinstance(v, list):
        return ", ".join("-" if s is None else _fmt(s) for s in v)
    return _setting(v) if setting else _fmt(v)


def _tex(text: str) -> str:
    out = "".join("\\" + ch if ch in "&%$#_{}" else ch for ch in text)
    return out.replace("~", r"\textasciitilde{}").replace("^", r"\textasciicircum{}")


def to_latex(c: Comparison) -> str:
    """The ablation table as a LaTeX tabular (booktabs: \\toprule, \\midrule, \\bottomrule),
    mean $\\pm$ std over seeds; the best row's metric in bold."""
    head, rows = main_table(c)
    ns = len(c.group_keys)
    lines = [r"\begin{tabular}{" + "l" * ns + "r" * (len(head) - ns) + "}", r"\toprule"]
    lines += [" & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    for i, cells in enumerate(rows):
        out = []
        for j, v in enumerate(cells):
            text = _tex(_cell(v, j < ns)).replace(" ± ", r" $\pm$ ")
            out.append(r"\textbf{" + text + "}" if i == 0 and j == ns + 1 and text else text)
        lines.append(" & ".join(out) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table_csv(c: Comparison, path: Path) -> None:
    """The ablation table as CSV: a stat column becomes ``<name> mean``, ``<name> std`` (n: its own column)."""
    head, rows = main_table(c)
    stat_cols = {j for r in rows for j, v in enumerate(r) if isinstance(v, tuple)}
    header = [x for j, h in enumerate(head) for x in ((f"{h} mean", f"{h} std") if j in stat_cols else (h,))]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            cells = []
            for j, v in enumerate(r):
                if j in stat_cols:
                    mean, std, n = v if isinstance(v, tuple) else (None, None, 0)
                    cells += ["" if not n else mean, "" if std is None else std]
                elif isinstance(v, list):
                    cells.append(_cell(v, False))
                else:
                    cells.append(_key(v) if isinstance(v, dict) else "" if v is None else v)
            w.writerow(cells)


def to_markdown(c: Comparison, out: Path | None = None, plots: Sequence[tuple[str, str]] = (), title: str = "") -> str:
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
        (
            f"Sorted by `{c.metric}` ({'largest' if c.descending else 'smallest'} first), one evaluation per job."
            if c.single
            else f"Sorted by the best `{c.metric}` ({'largest' if c.descending else 'smallest'} first): the "
            f"{'maximum' if c.descending else 'minimum'} over each run's evaluations (metrics.csv), with the "
            f"step where it was reached; `final` is the value at the end of the run."
        )
        + (
            f" Jobs that differ only by {' / '.join(f'`{k}`' for k in c.seed_keys)} are aggregated: "
            "mean ± std over the n seeds."
            if c.seed_keys
            else ""
        )
        + (
            f" Not in this table ({', '.join(f'`{k}`' for k in c.moved)}): it depends on the noise schedule, "
            "which this sweep varies (every job below; per noise level in loss_by_sigma.png)."
            if c.moved
            else ""
        ),
        "",
    ]
    if c.rescore:
        lines += [_rescore_note(c), ""]
    head, rows = main_table(c)
    ns = len(c.group_keys)
    first = (f"rescore/{c.rescore['tag']}/samples.png",) if c.rescore else ()
    lines += ["| " + " | ".join([*head, "samples"]) + " |", "|" + "---|" * (len(head) + 1)]
    for g, cells in zip(c.groups, rows):
        grids = []
        for j in g.jobs:
            rel = _grid(j, out, first)
            if rel:
                seed = next((f"seed {_fmt(j.config.get(k))}" for k in c.seed_keys), "samples")
                grids.append(f'<a href="{rel}"><img src="{rel}" alt="{seed}" title="{j.name}"></a>')
        lines.append("| " + " | ".join([*(_cell(v, i < ns) for i, v in enumerate(cells)), " ".join(grids)]) + " |")
    if not c.groups:
        lines.append("| " + " | ".join([""] * (len(head) + 1)) + " |")
    verdicts = significance(c)
    if verdicts:
        lines += ["", "Which differences are significant (each row against the best):", ""]
        lines += [f"- {v}" for v in verdicts]
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


def _rescore_note(c: Comparison) -> str:
    """The sentence that says the tables hold a re-score's values (``analysis.use_rescore``)."""
    r = c.rescore
    assert r is not None, "called only for a comparison that holds a re-score"
    done, missing = r["rescored"], r["missing"]
    text = (
        f"Re-scored with {_fmt(r['n_samples'])} samples, {r['checkpoint']} checkpoint (`rescore/{r['tag']}`, "
        f"`python sample.py mode=rescore`; {len(done)} of {len(done) + len(missing)} finished jobs): `{c.metric}` "
        "and the other re-scored values in these tables are the re-score's, the same seeds for every job; the "
        "training run's own values are in the per-job table as `training <key>`."
    )
    if missing:
        text += " Not re-scored (left out of the ablation table): " + ", ".join(f"`{m}`" for m in missing) + "."
    return text


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


def write_report(c: Comparison, out: Path, title: str = "", sweep_dir: Path | None = None) -> dict:
    """compare.md, compare.csv, table.csv, table.tex and the plots (compare.png: the metric against
    each setting, or one scatter per parameter for an Optuna search in ``sweep_dir``; nfe.png for a
    sampler-kind sweep; loss_by_sigma.png) into ``out``; returns {name: path}. Written into a
    temporary folder inside ``out``, then moved in: a write that fails (a full disk) raises OSError
    with nothing of this report left behind (``out`` itself, when this call made it, is removed)."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".compare-", dir=out))
    try:
        staged = {"csv": stage / "compare.csv", "table_csv": stage / "table.csv", "tex": stage / "table.tex"}
        write_csv(c, staged["csv"])
        write_table_csv(c, staged["table_csv"])
        staged["tex"].write_text(to_latex(c))
        plots = []
        if sweep_dir is not None and is_search(sweep_dir) and plot_search(c, stage / "compare.png"):
            staged["png"] = stage / "compare.png"
            plots.append(("compare.png", f"search: each trial's {c.best_col} against each parameter"))
        elif plot(c, stage / "compare.png"):
            staged["png"] = stage / "compare.png"
            what = c.metric if c.single else f"{c.metric}: best over the run (solid) and final (dashed),"
            plots.append(("compare.png", f"{what} against each setting"))
        if plot_nfe(c, stage / "nfe.png"):
            staged["nfe"] = stage / "nfe.png"
            plots.append(("nfe.png", f"{c.metric} against NFE, one series per sampler kind"))
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
