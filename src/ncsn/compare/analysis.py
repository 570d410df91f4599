"""The comparison: which keys are the sweep's settings, each job's best and final metric, the
groups over seeds, sorted."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .jobs import Job, _natural, _num, find_jobs

#: fnmatch patterns of flattened config keys that are never sweep settings.
IGNORE = ("hydra", "hydra.*", "paths", "paths.*", "*dir", "*dirpath")
#: Results shown next to the metric in the ablation table when present (the rest: per-job table).
HEADLINE = (
    "val/loss",
    "fid/denoised",
    "fid/no_denoise",
    "fid_ci_low",
    "fid_ci_high",
    "kid",
    "kid_std",
    "bpd",
    "bpd_se",
    "toy/weight_error",
    "sample/nfe",
    "nfe",
    "time_s",
)


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
    skipped: list = field(default_factory=list)  # jobs left out: their config cannot be read (``Job.skipped``)

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
    has_bpd = any(j.results and "bpd" in j.results for j in jobs)
    return "fid" if has_fid else "bpd" if has_bpd else "val/loss"


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
    """Read a sweep and build the sorted comparison (no files written). Jobs whose config cannot
    be read are left out (``Comparison.skipped``)."""
    sweep_dir = Path(sweep_dir)
    found = find_jobs(sweep_dir)
    jobs = [j for j in found if not j.skipped]  # an unreadable config would make every key vary
    metric = metric or default_metric(jobs)
    vary = varying_keys(jobs, ignore, sweep_dir)
    c = Comparison(metric, vary, [], [], descending=descending, skipped=[j for j in found if j.skipped])
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
