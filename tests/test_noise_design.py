"""NCSNv2 techniques 1, 2, 4 (ncsn.core.noise_design) against the paper's CIFAR-10 numbers and brute force."""

import math

import numpy as np
import pytest
import torch

from ncsn.core.noise_design import (
    design_noise,
    gamma_for_overlap,
    langevin_variance_ratio,
    max_pairwise_distance,
    num_scales_for,
    overlap_c,
    step_lr_for,
)
from ncsn.core.sigmas import make_sigmas

D_CIFAR = 3 * 32 * 32
GAMMA_CIFAR = (50.0 / 0.01) ** (1.0 / 231)  # reference config: sigma_1=50, sigma_L=0.01, L=232


def _brute_max(x):
    x = x.reshape(len(x), -1).double()
    return max(float(torch.linalg.vector_norm(x[i] - x[j])) for i in range(len(x)) for j in range(len(x)))


# -- technique 1 ------------------------------------------------------------------------------
@pytest.mark.parametrize("n,shape,chunk", [(37, (5,), 8), (20, (1, 3, 3), 1024), (2, (4,), 1)])
def test_max_pairwise_distance_matches_brute_force(n, shape, chunk):
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(n))
    assert max_pairwise_distance(x, chunk_size=chunk) == pytest.approx(_brute_max(x), rel=1e-12)
    assert max_pairwise_distance(x.numpy(), chunk_size=chunk) == pytest.approx(_brute_max(x), rel=1e-12)


def test_max_pairwise_distance_sample_is_seeded_subset_lower_bound():
    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(1))
    full = _brute_max(x)
    a = max_pairwise_distance(x, sample_size=15, seed=3, chunk_size=4)
    assert a == max_pairwise_distance(x, sample_size=15, seed=3)
    assert a <= full + 1e-12
    idx = torch.sort(torch.randperm(60, generator=torch.Generator().manual_seed(3))[:15]).values
    assert a == pytest.approx(_brute_max(x[idx]), rel=1e-12)
    assert max_pairwise_distance(x, sample_size=1000) == pytest.approx(full, rel=1e-12)


def test_max_pairwise_distance_reads_datasets_of_pairs():
    x = torch.rand(12, 1, 2, 2, generator=torch.Generator().manual_seed(2))
    ds = [(x[i], -1) for i in range(12)]
    assert max_pairwise_distance(ds) == pytest.approx(_brute_max(x), rel=1e-12)


# -- technique 2 ------------------------------------------------------------------------------
def test_overlap_of_reference_cifar10_config():
    assert GAMMA_CIFAR == pytest.approx(1.0376, abs=1e-4)
    assert overlap_c(GAMMA_CIFAR, D_CIFAR) == pytest.approx(0.567, abs=1e-3)


def test_gamma_for_overlap_inverts_c_and_matches_bisection():
    for dim, c in [(D_CIFAR, 0.5), (D_CIFAR, 0.567), (64, 0.3), (12288, 0.9)]:
        g = gamma_for_overlap(c, dim)
        assert g > 1 and overlap_c(g, dim) == pytest.approx(c, abs=1e-10)
        # independent check: plain bisection on [1, 3], where C - c goes from > 0 to < 0
        lo, hi = 1.0, 3.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if overlap_c(mid, dim) > c else (lo, mid)
        assert g == pytest.approx(0.5 * (lo + hi), abs=1e-10)
    assert gamma_for_overlap(0.567, D_CIFAR) == pytest.approx(GAMMA_CIFAR, abs=2e-4)


def test_gamma_for_overlap_rejects_bad_targets_and_tiny_dimensions():
    with pytest.raises(ValueError, match="overlap"):
        gamma_for_overlap(0.999, D_CIFAR)
    with pytest.raises(ValueError, match="too small"):
        gamma_for_overlap(0.5, 2)


def test_num_scales_for():
    assert num_scales_for(50.0, 0.01, GAMMA_CIFAR) == 232  # no spurious +1 from float error
    g = gamma_for_overlap(0.5, D_CIFAR)
    steps = math.log(50.0 / 0.01) / math.log(g)
    assert steps + 1 == pytest.approx(219.25, abs=0.01)  # continuous L: the "c = 0.5 -> L ~ 219"
    L = num_scales_for(50.0, 0.01, g)
    assert L == 220  # rounded up: realised ratio <= gamma, realised overlap >= c
    realised = (50.0 / 0.01) ** (1.0 / (L - 1))
    assert realised <= g and overlap_c(realised, D_CIFAR) >= 0.5
    with pytest.raises(ValueError):
        num_scales_for(0.01, 50.0, g)


# -- technique 4 ------------------------------------------------------------------------------
def test_variance_ratio_matches_paper_form():
    eps, g, sl, T = 3e-6, 1.05, 0.01, 4
    u = eps / sl**2
    b = 2 * u / (1 - (1 - u) ** 2)  # the paper's form of b
    assert langevin_variance_ratio(eps, g, sl, T) == pytest.approx((1 - u) ** (2 * T) * (g**2 - b) + b, rel=1e-12)
    assert langevin_variance_ratio(1e-20, g, sl, T) == pytest.approx(g**2)  # eps -> 0: no mixing


def test_step_lr_reference_cifar10():
    eps = step_lr_for(GAMMA_CIFAR, 0.01, 5)
    assert eps == pytest.approx(6.2e-6, rel=0.01)  # the reference config's step_lr


@pytest.mark.parametrize("gamma,sigma_L,T", [(GAMMA_CIFAR, 0.01, 5), (1.1, 0.05, 1), (1.02, 0.001, 20), (1.5, 1.0, 3)])
def test_step_lr_matches_dense_grid(gamma, sigma_L, T):
    eps = step_lr_for(gamma, sigma_L, T)
    grid = np.logspace(-12, 0, 400_001, endpoint=False) * sigma_L**2
    vals = np.abs(langevin_variance_ratio(grid, gamma, sigma_L, T) - 1)
    assert abs(langevin_variance_ratio(eps, gamma, sigma_L, T) - 1) <= vals.min() + 1e-12
    assert eps == pytest.approx(grid[np.argmin(vals)], rel=1e-3)


def test_step_lr_decreases_with_more_steps():
    e = [step_lr_for(GAMMA_CIFAR, 0.01, T) for T in (1, 5, 50)]
    assert e[0] > e[1] > e[2]


# -- design_noise -----------------------------------------------------------------------------
def test_design_noise_on_small_images():
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    d = design_noise(x, sigma_end=0.01, overlap=0.5, n_steps_each=5, sample_size=None, seed=0)
    assert set(d) == {"sigma_begin", "sigma_end", "num_scales", "gamma", "overlap", "step_lr"}
    assert d["sigma_begin"] == pytest.approx(_brute_max(x), rel=1e-12)
    assert d["num_scales"] == num_scales_for(d["sigma_begin"], 0.01, gamma_for_overlap(0.5, 64))
    s = make_sigmas("geometric", d["sigma_begin"], d["sigma_end"], d["num_scales"])
    assert float(s[0] / s[1]) == pytest.approx(d["gamma"], rel=1e-10)
    assert d["overlap"] >= 0.5 and d["overlap"] == pytest.approx(overlap_c(d["gamma"], 64))
    assert d["step_lr"] == pytest.approx(step_lr_for(d["gamma"], 0.01, 5))
    # the subset path is seeded
    assert design_noise(x, 0.01, sample_size=10, seed=1) == design_noise(x, 0.01, sample_size=10, seed=1)


def test_design_noise_computes_only_what_is_not_given():
    """Technique 1 only without sigma_begin, technique 2 only without num_scales; step_lr always
    for the realised ratio; one level has no ratio (gamma, overlap and step_lr are None)."""
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    auto = design_noise(x, 0.01, sample_size=None)
    d = design_noise(x, 0.01, sample_size=None, num_scales=4)
    assert d["sigma_begin"] == auto["sigma_begin"] and d["num_scales"] == 4
    assert d["gamma"] == pytest.approx((auto["sigma_begin"] / 0.01) ** (1 / 3), rel=1e-12)
    assert d["step_lr"] == pytest.approx(step_lr_for(d["gamma"], 0.01, 5))
    d = design_noise(x, 0.01, overlap=0.4, sample_size=None, sigma_begin=2.0)
    assert d["sigma_begin"] == 2.0 and d["num_scales"] == num_scales_for(2.0, 0.01, gamma_for_overlap(0.4, 64))
    d = design_noise(x, 0.01, sigma_begin=3.0, num_scales=7)
    assert (d["sigma_begin"], d["num_scales"]) == (3.0, 7) and d["overlap"] == pytest.approx(overlap_c(d["gamma"], 64))
    one = design_noise(x, 0.01, num_scales=1)
    assert one["num_scales"] == 1 and one["gamma"] is None and one["step_lr"] is None
    with pytest.raises(ValueError, match="num_scales=0"):
        design_noise(x, 0.01, num_scales=0)
    with pytest.raises(ValueError, match="sigma_begin=0.005"):
        design_noise(x, 0.01, sigma_begin=0.005)
