"""Which differences of a comparison are real: each group against the best one, in words.

Two groups whose runs give the same value seed for seed (to 1e-9 relative) are said to be
identical: the setting they differ in changed nothing the metric sees (a knob this configuration
does not use: e.g. the number of training levels when the loss draws sigma continuously and the
sampler runs on its own grid). Seed groups (n >= 2 on both sides): Welch's t-test on the per-run
values of the metric (the best of each run, or its one value for sample.py jobs), two-sided;
"beats" at p < 0.05. Single runs: their bootstrap intervals (results.json ``<metric>_ci_low`` /
``_ci_high``, one evaluation per job) either overlap (not distinguishable) or not. Otherwise no
claim is made, and the sentence says why.
"""

from __future__ import annotations

import math

from .analysis import Comparison, Group, best_and_final

ALPHA = 0.05


def _label(c: Comparison, g: Group) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={g.settings[k]}" for k in c.group_keys) or "all"


def _values(c: Comparison, g: Group) -> list[float]:
    vals = [best_and_final(j, c.metric, c.descending)[0] for j in g.jobs]
    return [v for v in vals if not math.isnan(v)]


def _interval(c: Comparison, g: Group) -> tuple[float, float] | None:
    if not c.single or len(g.jobs) != 1:
        return None
    results = g.jobs[0].results or {}
    low, high = results.get(f"{c.metric}_ci_low"), results.get(f"{c.metric}_ci_high")
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high))
    return (float(low), float(high)) if ok and low is not None and high is not None else None


def _by_seed(c: Comparison, g: Group) -> dict:
    """{seed values: the metric} of a group's jobs (empty when the sweep has no seed key)."""
    keys = c.seed_keys
    if not keys:
        return {}
    return {tuple(str(j.config.get(k)) for k in keys): best_and_final(j, c.metric, c.descending)[0] for j in g.jobs}


def identical(c: Comparison, a: Group, b: Group) -> bool:
    """The two groups' runs give the same value for each shared seed (at least two seeds)."""
    va, vb = _by_seed(c, a), _by_seed(c, b)
    shared = [k for k in va if k in vb and not math.isnan(va[k]) and not math.isnan(vb[k])]
    return len(shared) >= 2 and all(math.isclose(va[k], vb[k], rel_tol=1e-9, abs_tol=0.0) for k in shared)


def welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances)."""
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def significance(c: Comparison) -> list[str]:
    """One sentence per group after the best (``c.groups[0]``): does the best beat it?"""
    if len(c.groups) < 2:
        return []
    best, lines = c.groups[0], []
    a = _values(c, best)
    for g in c.groups[1:]:
        b, pair = _values(c, g), f"{_label(c, best)} vs {_label(c, g)}"
        if identical(c, best, g):
            lines.append(
                f"{pair}: identical seed for seed (n={len(b)}): this setting changed nothing `{c.metric}` sees; "
                "check that the configuration uses it"
            )
            continue
        if len(a) >= 2 and len(b) >= 2:
            p = welch_p(a, b)
            n = f"n={len(a)} each" if len(a) == len(b) else f"n={len(a)} and {len(b)}"
            verdict = f"{_label(c, best)} beats {_label(c, g)}" if p < ALPHA else f"{pair}: not significant"
            lines.append(f"{verdict}: p={p:.2g}, {n} (Welch's t-test on `{c.metric}`)")
            continue
        ia, ib = _interval(c, best), _interval(c, g)
        if ia and ib:
            apart = ia[1] < ib[0] or ib[1] < ia[0]
            verdict = f"{_label(c, best)} beats {_label(c, g)}" if apart else f"{pair}: not distinguishable"
            lines.append(
                f"{verdict}: 95% intervals [{ia[0]:.4g}, {ia[1]:.4g}] and [{ib[0]:.4g}, {ib[1]:.4g}] "
                + ("do not overlap" if apart else "overlap")
            )
            continue
        lines.append(f"{pair}: no test (n={len(a)} and {len(b)} runs; add seeds, or intervals)")
    return lines
