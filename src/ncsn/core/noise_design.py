"""Designing the noise levels and the sampler step size from the data (NCSNv2's techniques).

Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative Models"
(arXiv 2006.09011), Sec. 3 and 4. Noise levels are geometric, sigma_1 > ... > sigma_L (see
``ncsn.core.sigmas``: index 0 holds sigma_1, the largest), with ratio gamma = sigma_{i-1} / sigma_i.

Technique 1 (initial noise scale): sigma_1 = the maximum Euclidean distance between any two
    training points, so that Langevin dynamics started at the largest level can reach every mode.
    -> ``max_pairwise_distance``
Technique 2 (other noise scales): for data of dimension D, approximating ||x|| under
    N(0, sigma_i^2 I) by N(sqrt(D) sigma_i, sigma_i^2 / 2), choose gamma so that the 3-sigma
    shells of adjacent levels overlap by a target fraction c (the paper: c ~ 0.5),

        C(gamma) = Phi(sqrt(2D) (gamma - 1) + 3 gamma) - Phi(sqrt(2D) (gamma - 1) - 3 gamma) = c.

    -> ``overlap_c``, ``gamma_for_overlap``; L then follows from sigma_1, sigma_L and gamma
    -> ``num_scales_for``.
Technique 4 (step size): with alpha_i = eps sigma_i^2 / sigma_L^2 (the sampler's convention,
    ``ncsn.sampling.annealed_langevin`` with ``step_lr`` = eps) and T = ``n_steps_each`` steps per
    level, the variance of the samples after T steps at level i, relative to sigma_i^2, is
    (paper, Eq. (6); u = eps / sigma_L^2, b = 2u / (1 - (1 - u)^2) = 2 / (2 - u))

        s_T^2 / sigma_i^2 = (1 - u)^(2T) (gamma^2 - b) + b,

    and eps is chosen to bring it as close to 1 as possible -> ``langevin_variance_ratio``,
    ``step_lr_for``.
``design_noise`` chains the three, each for what the config leaves null, and returns what
``sigmas.kind=auto`` needs.

Plain torch/numpy/scipy; no Lightning, no Hydra.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import norm

# Phi(3) - Phi(-3): C(1). Targets at or above it have no (unique) solution gamma > 1.
OVERLAP_AT_GAMMA_1 = float(norm.cdf(3.0) - norm.cdf(-3.0))


# ---------------------------------------------------------------------------------------------
# Technique 1: sigma_1 = max pairwise distance
# ---------------------------------------------------------------------------------------------
def _flat_points(data, sample_size: int | None, seed: int) -> torch.Tensor:
    """Return (n, D) float64 points: ``data`` is an (N, ...) tensor/array, or a dataset of ``x``
    or ``(x, y)`` items. With ``sample_size < N`` a uniformly random subset (without replacement,
    ``torch.randperm`` under ``torch.Generator().manual_seed(seed)``) is taken *before* any item
    of a dataset is read."""
    is_array = isinstance(data, (torch.Tensor, np.ndarray))
    n = data.shape[0] if is_array else len(data)
    if n < 1:
        raise ValueError("no data points")
    if sample_size is not None and sample_size < 1:
        raise ValueError(f"sample_size={sample_size} must be >= 1 or None (all points)")
    idx = torch.arange(n)
    if sample_size is not None and sample_size < n:
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample_size]
        idx, _ = torch.sort(idx)
    if is_array:
        x = torch.as_tensor(data)
        x = x if len(idx) == n else x[idx]
    else:
        items = [data[int(i)] for i in idx]
        x = torch.stack([torch.as_tensor(it[0] if isinstance(it, (tuple, list)) else it) for it in items])
    return x.reshape(x.shape[0], -1).to(torch.float64)


def max_pairwise_distance(data, sample_size: int | None = None, seed: int = 0, chunk_size: int = 1024) -> float:
    """Technique 1: max_{i,j} ||x_i - x_j||_2 over the (flattened) data points.

    Exact over all N points when ``sample_size`` is None or >= N; otherwise over a random subset
    of ``sample_size`` points drawn with ``seed`` (a lower bound of the full maximum). Pairs are
    visited in ``chunk_size`` x ``chunk_size`` blocks of the upper triangle with ``torch.cdist``
    (memory O(chunk_size^2 + n D)); the winning pair's distance is recomputed directly in float64.
    """
    x = _flat_points(data, sample_size, seed)
    n = x.shape[0]
    best, best_pair = -1.0, (0, 0)
    for i0 in range(0, n, chunk_size):
        a = x[i0 : i0 + chunk_size]
        for j0 in range(i0, n, chunk_size):
            d = torch.cdist(a, x[j0 : j0 + chunk_size])
            k = int(torch.argmax(d))
            v = float(d.reshape(-1)[k])
            if v > best:
                best, best_pair = v, (i0 + k // d.shape[1], j0 + k % d.shape[1])
    i, j = best_pair
    return float(torch.linalg.vector_norm(x[i] - x[j]))


# ---------------------------------------------------------------------------------------------
# Technique 2: the ratio gamma and the number of levels L
# ---------------------------------------------------------------------------------------------
def overlap_c(gamma: float, dim: int) -> float:
    """Technique 2: C(gamma) = Phi(sqrt(2D)(gamma-1) + 3 gamma) - Phi(sqrt(2D)(gamma-1) - 3 gamma).

    The probability mass of the norm of N(0, sigma_i^2 I) samples inside the 3-sigma shell of
    level i-1 (large-D Gaussian approximation of the norm). ``dim`` is D = number of data entries.
    """
    s = math.sqrt(2.0 * dim)
    a = s * (gamma - 1.0)
    return float(norm.cdf(a + 3.0 * gamma) - norm.cdf(a - 3.0 * gamma))


def gamma_for_overlap(c: float, dim: int) -> float:
    """Technique 2: the ratio gamma > 1 solving C(gamma) = c.

    For sqrt(2D) > 3 (D >= 5) C rises very slightly from C(1) = Phi(3) - Phi(-3) ~ 0.9973 to a
    single maximum and then decreases to 0 (d/dgamma log[phi(a+)/phi(a-)] = -6 sqrt(2D)(2 gamma - 1)
    < 0, so C' changes sign once), hence every 0 < c < C(1) has exactly one root, found by
    bracketing and Brent's method. For D <= 4 C never falls below C(1): ValueError (the
    technique's Gaussian approximation of ||x|| is meant for high-dimensional data).
    """
    if not 0.0 < c < OVERLAP_AT_GAMMA_1:
        raise ValueError(f"overlap c={c} must lie in (0, {OVERLAP_AT_GAMMA_1:.4f}) = (0, Phi(3)-Phi(-3))")
    if 2.0 * dim <= 9.0:
        raise ValueError(
            f"data dimension D={dim} too small for technique 2: C(gamma) >= C(1) for all gamma "
            "when sqrt(2D) <= 3; set sigmas.num_scales by hand"
        )
    f = lambda g: overlap_c(g, dim) - c  # noqa: E731
    hi = 1.0 + 1e-3
    while f(hi) > 0.0:
        hi = 1.0 + 2.0 * (hi - 1.0)
        if hi > 1e6:  # pragma: no cover - C -> 0 for D >= 5, so this is not reached
            raise RuntimeError("could not bracket gamma")
    return float(brentq(f, 1.0, hi, xtol=1e-14, rtol=1e-15))


def num_scales_for(sigma_1: float, sigma_L: float, gamma: float) -> int:
    """L such that the geometric sequence from sigma_1 to sigma_L has ratio at most gamma.

    L = ceil(log(sigma_1 / sigma_L) / log(gamma)) + 1 (rounding up, up to 1e-9 for floating
    error): the realised ratio (sigma_1 / sigma_L)^(1/(L-1)) is <= gamma, so the realised overlap
    C is >= the target c. (Rounding to nearest would give one level fewer about half the time.)
    """
    if not sigma_1 > sigma_L > 0:
        raise ValueError(f"need sigma_1={sigma_1} > sigma_L={sigma_L} > 0")
    if not gamma > 1.0:
        raise ValueError(f"gamma={gamma} must be > 1")
    steps = math.log(sigma_1 / sigma_L) / math.log(gamma)
    return int(math.ceil(steps - 1e-9)) + 1


# ---------------------------------------------------------------------------------------------
# Technique 4: the step size eps (``step_lr``)
# ---------------------------------------------------------------------------------------------
def langevin_variance_ratio(step_lr, gamma: float, sigma_L: float, n_steps_each: int):
    """Technique 4, paper Eq. (6): s_T^2 / sigma_i^2 after T = ``n_steps_each`` Langevin steps.

    (1 - u)^(2T) (gamma^2 - b) + b with u = step_lr / sigma_L^2, b = 2u / (1 - (1 - u)^2), which
    simplifies to b = 2 / (2 - u) (used here; stable for tiny u). Accepts floats or arrays.
    """
    u = np.asarray(step_lr, dtype=np.float64) / sigma_L**2
    b = 2.0 / (2.0 - u)
    out = (1.0 - u) ** (2 * n_steps_each) * (gamma**2 - b) + b
    return float(out) if out.ndim == 0 else out


def step_lr_for(gamma: float, sigma_L: float, n_steps_each: int) -> float:
    """Technique 4: eps minimising |langevin_variance_ratio(eps) - 1| over 0 < eps < sigma_L^2.

    On 0 < u < 1 the ratio minus 1 equals (1-u)^(2T)(gamma^2 - b) + (b - 1) with b > 1: where
    b <= gamma^2 both terms are >= 0 and one is > 0; where b > gamma^2 it is
    (b - 1) - (1-u)^(2T)(b - gamma^2) > (b - 1) - (b - gamma^2) > 0. So for gamma > 1 the ratio
    never reaches 1 and the minimiser is interior: a log-spaced grid of u in [1e-12, 1) locates
    it and a bounded Brent search in log u refines it. Returns eps = u * sigma_L^2.
    """
    if not gamma > 1.0:
        raise ValueError(f"gamma={gamma} must be > 1")
    if n_steps_each < 1:
        raise ValueError(f"n_steps_each={n_steps_each} must be >= 1")
    obj = lambda log_u: abs(langevin_variance_ratio(math.exp(log_u), gamma, 1.0, n_steps_each) - 1.0)  # noqa: E731
    grid = np.linspace(math.log(1e-12), math.log(1.0 - 1e-12), 4001)
    vals = np.abs(langevin_variance_ratio(np.exp(grid), gamma, 1.0, n_steps_each) - 1.0)
    k = int(np.argmin(vals))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    res = minimize_scalar(obj, bounds=(lo, hi), method="bounded", options={"xatol": 1e-12})
    log_u = float(res.x) if res.fun <= vals[k] else float(grid[k])
    return math.exp(log_u) * sigma_L**2


# ---------------------------------------------------------------------------------------------
# All together
# ---------------------------------------------------------------------------------------------
def design_noise(
    data,
    sigma_end: float,
    overlap: float = 0.5,
    n_steps_each: int = 5,
    sample_size: int | None = 10_000,
    seed: int = 0,
    sigma_begin: float | None = None,
    num_scales: int | None = None,
) -> dict:
    """NCSNv2 techniques 1, 2 and 4 for ``sigmas.kind=auto``, each only for what is not given.

    ``data``: an (N, ...) tensor/array of training points (images are flattened) or a dataset of
    ``x`` / ``(x, y)`` items, on the same scale the model trains on. ``sigma_begin`` None: the max
    pairwise distance (technique 1, over a ``sample_size`` random subset drawn with ``seed``; None =
    all); given: kept. ``num_scales`` None: from gamma for the target ``overlap`` c with D = entries
    per point (technique 2, ``num_scales_for``, rounded up); given: kept. step_lr for
    ``n_steps_each`` (technique 4).

    Returns dict(sigma_begin, sigma_end, num_scales, gamma, overlap, step_lr) where gamma and
    overlap are the *realised* values of the geometric schedule
    ``make_sigmas("geometric", sigma_begin, sigma_end, num_scales)`` (computed L: gamma <= target
    ratio, overlap >= target c), and step_lr is designed for that realised gamma. With
    ``num_scales`` = 1 (one level, sigma_end) there is no ratio: gamma, overlap and step_lr are None.
    """
    if num_scales is not None and (isinstance(num_scales, bool) or int(num_scales) != num_scales or num_scales < 1):
        raise ValueError(f"num_scales={num_scales} must be an integer >= 1 or None (technique 2)")
    x = None
    if sigma_begin is None:
        x = _flat_points(data, sample_size, seed)
        sigma_begin = max_pairwise_distance(x)
        if not sigma_begin > sigma_end:
            raise ValueError(f"max pairwise distance {sigma_begin:.4g} is not above sigma_end={sigma_end}")
    elif num_scales != 1 and not sigma_begin > sigma_end:
        raise ValueError(f"sigma_begin={sigma_begin} must be > sigma_end={sigma_end}")
    dim = (x if x is not None else _flat_points(data, 1, seed)).shape[1]  # D: one point is enough
    if num_scales is None:
        num_scales = num_scales_for(sigma_begin, sigma_end, gamma_for_overlap(overlap, dim))
    num_scales = int(num_scales)
    gamma = (sigma_begin / sigma_end) ** (1.0 / (num_scales - 1)) if num_scales > 1 else None
    return dict(
        sigma_begin=float(sigma_begin),
        sigma_end=float(sigma_end),
        num_scales=num_scales,
        gamma=gamma,
        overlap=overlap_c(gamma, dim) if gamma is not None else None,
        step_lr=step_lr_for(gamma, sigma_end, n_steps_each) if gamma is not None else None,
    )
