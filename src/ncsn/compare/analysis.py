"""The comparison: which keys are the sweep's settings, each job's best and final metric, the
groups over seeds, sorted."""

from __future__ import annotations

import fnmatch
import json
import math
import os
import re
import statistics
from dataclasses import dataclass, field, replace
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
    "val/bpd",
    "toy/weight_error",
    "sample/nfe",
    "nfe",
    "time_s",
)
#: Keys that are a run's seed: jobs differing only by them are aggregated (the sampling seed, or the
#: training seed of a re-scored checkpoint).
SEEDS = ("seed", "train_config.seed")
#: Results that depend on the noise schedule (a loss summed over other sigmas is another quantity):
#: out of the ablation table when the sweep varies the schedule (``sigmas.*``); per job and per sigma.
SCHEDULE_DEPENDENT = ("val/loss", "train/loss", "val/loss_*")


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
    single: bool = False  # one evaluation per job (sample.py): no best/step/final columns, the value alone
    moved: list = field(default_factory=list)  # schedule-dependent results left out of the ablation table
    rescore: dict | None = None  # the re-score in the tables (``use_rescore``): tag, checkpoint, n_samples, ...

    @property
    def unfinished(self) -> list:
        return [j for j in self.jobs if not j.finished]

    @property
    def best_col(self) -> str:
        return self.metric if self.single else f"best {self.metric}"

    @property
    def step_col(self) -> str | None:
        return None if self.single else f"best {self.metric} step"

    @property
    def final_col(self) -> str:
        return self.metric if self.single else f"final {self.metric}"

    @property
    def seed_keys(self) -> list:
        return [k for k in self.varying if k in SEEDS]


@dataclass
class Group:
    settings: dict  # the setting values shared by the group's jobs
    jobs: list  # finished jobs, in seed order
    stats: dict  # column -> (mean, std or None, n)
    steps: list  # the step of each job's best value


def _key(v) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def value_order(v):
    """Sort key of setting values: numbers by value (5e-06 before 1e-05), then the rest naturally."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v):
        return (0, float(v), [])
    return (1, 0.0, _natural("null" if v is None else str(v)))


def _points_inside(value, job: Job, sweep_dir: Path | None) -> bool:
    """A string naming the job's or the sweep's directory (or a path below them), also after the
    sweep was moved: ``<sweep dir name>/<job name>`` inside the string counts."""
    if not isinstance(value, str) or "/" not in value and os.sep not in value:
        return False
    dirs = [d for d in (job.path, sweep_dir) if d is not None]
    for path in dirs:
        d = str(Path(path).resolve())
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
    all_keys = {k for j in jobs for k in j.config}
    keys = [k for k in all_keys if not any(fnmatch.fnmatchcase(k, p) for p in ignore)]
    vary = {k for k in keys if len({_key(j.config.get(k)) for j in jobs}) > 1}
    vary = {k for k in vary if not any(_points_inside(j.config.get(k), j, sweep_dir) for j in jobs)}
    order: dict[str, int] = {}
    for j in jobs:
        for k in j.override_keys:
            order.setdefault(k, len(order))
    if jobs and all(j.has_overrides for j in jobs):  # only what the user swept, not what it implies
        vary = {k for k in vary if k in order or any(k.startswith(g + ".") for g in order)}
    vary = {k for k in vary if not any(k.startswith(g + ".") for g in vary)}
    ranked = sorted(vary, key=lambda k: (order.get(k, len(order)), k.count("."), len(k), k))
    kept: list = []
    seen: dict[tuple, str] = {}
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


def _result_columns(jobs, metric: str) -> list:
    """The numeric results.json keys beside the metric, less duplicates of the metric's own columns:
    ``<metric>/best`` and ``<metric>/best_step`` (train.py's record of the best), and a key equal to
    the metric in every job that has both (sample.py's ``fid/denoised`` when ``fid`` is that)."""
    keys = {
        k
        for j in jobs
        if j.results
        for k, v in j.results.items()
        if k not in (metric, "status", f"{metric}/best", f"{metric}/best_step") and not math.isnan(_num(v))
    }

    def same(k):
        has = [j.results for j in jobs if j.results and k in j.results and metric in j.results]
        pairs = [(r[k], r[metric]) for r in has]
        return bool(pairs) and all(_num(a) == _num(b) for a, b in pairs)

    return sorted(k for k in keys if not same(k))


#: training results a re-score replaces (with the re-score's own keys): they move to ``training <key>``
RESCORED_PREFIXES = ("fid", "kid", "kid_std", "fid_ci_low", "fid_ci_high", "sample")


def pick_rescore(jobs, wanted: str | None = None) -> str | None:
    """The re-score (``<job>/rescore/<tag>``, sample.py mode=rescore) the tables use: ``wanted``
    (ValueError when no finished job has it), none for ``"none"``, else the tag most finished jobs
    have (ties: more samples, then the name)."""
    if wanted == "none":
        return None
    count: dict[str, int] = {}
    samples: dict[str, float] = {}
    for j in jobs:
        for tag, r in j.rescores.items() if j.finished else ():
            count[tag] = count.get(tag, 0) + 1
            samples[tag] = max(samples.get(tag, 0), _num(r.get("n_samples")) if r.get("n_samples") else 0)
    if wanted is not None:
        if wanted not in count:
            found = ", ".join(sorted(count)) or "none"
            raise ValueError(
                f"--rescore={wanted!r}: no finished job has rescore/{wanted}/results.json (found: {found})"
            )
        return wanted
    return max(count, key=lambda t: (count[t], samples[t], t)) if count else None


def use_rescore(jobs, tag: str) -> tuple[list, dict]:
    """Jobs whose results are the re-score ``tag``'s where they have it: the training run's values
    of the re-scored metrics (``RESCORED_PREFIXES`` and the re-score's keys) become ``training
    <key>`` and leave the history (metrics.csv), so no table mixes them with the re-score's."""
    tagged = [j.rescores[tag] for j in jobs if tag in j.rescores]
    keys = {k for r in tagged for k in r if k != "status"}

    def moved(k: str) -> bool:
        return k in keys or k.split("/")[0] in RESCORED_PREFIXES

    out = []
    for j in jobs:
        own = {("training " + k if moved(k) else k): v for k, v in (j.results or {}).items()}
        results = {**own, **{k: v for k, v in j.rescores.get(tag, {}).items() if k != "status"}}
        history = {k: v for k, v in j.history.items() if not moved(k)}
        out.append(replace(j, results=results if j.results is not None or tag in j.rescores else None, history=history))
    first = tagged[0] if tagged else {}
    info = {
        "tag": tag,
        "checkpoint": first.get("checkpoint"),
        "n_samples": first.get("n_samples"),
        "rescored": [j.name for j in jobs if j.finished and tag in j.rescores],
        "missing": [j.name for j in jobs if j.finished and tag not in j.rescores],
    }
    return out, info


def _stats(values: list) -> tuple:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return (math.nan, None, 0)
    return (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


def compare(
    sweep_dir, metric: str | None = None, ignore=IGNORE, descending: bool = False, rescore: str | None = None
) -> Comparison:
    """Read a sweep and build the sorted comparison (no files written). Jobs whose config cannot
    be read are left out (``Comparison.skipped``). ``rescore``: the re-score whose values the
    tables use (``pick_rescore``: None = the most common one, if any; "none" = the training values)."""
    sweep_dir = Path(sweep_dir)
    found = find_jobs(sweep_dir)
    jobs = [j for j in found if not j.skipped]  # an unreadable config would make every key vary
    tag = pick_rescore(jobs, rescore)
    rescored = None
    if tag is not None:
        jobs, rescored = use_rescore(jobs, tag)
    metric = metric or default_metric(jobs)
    vary = varying_keys(jobs, ignore, sweep_dir)
    c = Comparison(metric, vary, [], [], descending=descending, skipped=[j for j in found if j.skipped])
    c.rescore = rescored
    group_keys = [k for k in vary if k not in SEEDS]
    c.single = not any(j.history.get(metric) for j in jobs)
    others = _result_columns(jobs, metric)
    schedule = [k for k in group_keys if k.split(".")[0] == "sigmas" or k.startswith("train_config.sigmas")]
    headline = [k for k in HEADLINE if k in others]
    c.moved = [k for k in headline if schedule and any(fnmatch.fnmatchcase(k, p) for p in SCHEDULE_DEPENDENT)]
    c.headline = [k for k in headline if k not in c.moved]
    fixed = [c.best_col] if c.single else [c.best_col, c.step_col, c.final_col]
    c.columns = ["job", *vary, *fixed, *others, "status"]
    sign = -1 if descending else 1

    def order(j):
        best = best_and_final(j, metric, descending)[0]
        return (not j.finished, math.isnan(best), sign * best if not math.isnan(best) else 0, _natural(j.name))

    jobs = sorted(jobs, key=order)
    for j in jobs:
        best, step, final = best_and_final(j, metric, descending)
        row = {"job": j.name, **{k: j.config.get(k) for k in vary}, **(j.results or {}), "status": j.status}
        row[c.final_col] = None if math.isnan(final) else final
        row.update({c.best_col: None if math.isnan(best) else best})
        if c.step_col:
            row[c.step_col] = step
        c.rows.append({col: row.get(col) for col in c.columns})
    c.jobs = jobs

    groups: dict[tuple, list] = {}
    for j in jobs:
        if j.finished and (tag is None or tag in j.rescores):  # a job not re-scored: the per-job table only
            groups.setdefault(tuple(_key(j.config.get(k)) for k in group_keys), []).append(j)
    for members in groups.values():
        members.sort(key=lambda j: ([value_order(j.config.get(k)) for k in SEEDS], _natural(j.name)))
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
            [value_order(g.settings[k]) for k in group_keys],
        )
    )
    c.group_keys = group_keys
    return c
