import math

import pytest
import torch

from ncsn.core.losses import dsm_loss, per_level_mean
from ncsn.core.sigmas import make_sigmas


def test_geometric_sigmas_values_order_and_dtype():
    s = make_sigmas("geometric", 1.0, 0.01, 10)
    assert s.dtype == torch.float64 and len(s) == 10
    assert s[0] == pytest.approx(1.0) and s[-1] == pytest.approx(0.01)
    assert torch.all(s[:-1] > s[1:])  # index 0 = largest
    ratios = s[:-1] / s[1:]
    assert torch.allclose(ratios, torch.full_like(ratios, 100 ** (1 / 9)), rtol=1e-12)


def test_linear_sigmas_and_single_level():
    s = make_sigmas("linear", 2.0, 0.5, 4)
    assert torch.allclose(s, torch.tensor([2.0, 1.5, 1.0, 0.5], dtype=torch.float64))
    assert make_sigmas("geometric", 5.0, 0.1, 1).tolist() == [0.1]


@pytest.mark.parametrize(
    "args",
    [("geometric", 0.01, 1.0, 10), ("geometric", 1.0, 0.0, 10), ("geometric", 1.0, 0.01, 0), ("cosine", 1.0, 0.01, 10)],
)
def test_bad_sigmas_raise(args):
    with pytest.raises(ValueError):
        make_sigmas(*args)


def gaussian_exact_score(mu, s2, sigmas):
    """Score of N(mu, s2 I) perturbed by N(0, sigma_i^2 I): -(x - mu) / (s2 + sigma_i^2)."""

    def score(x, level_index):
        var = s2 + sigmas[level_index].to(x.dtype).view(-1, *([1] * (x.dim() - 1))) ** 2
        return -(x - mu) / var

    return score


def test_dsm_loss_matches_closed_form_for_gaussian_data():
    # For data N(mu, s^2 I) in D dims and the exact perturbed score, the per-example loss has
    # expectation 1/2 * D * s^2 / (s^2 + sigma_i^2): with a = s^2 + sigma^2 the residual is
    # -(x - mu)/a + z s^2/(sigma a), of variance s^2/(sigma^2 a) per dim, weighted by sigma^2.
    torch.manual_seed(0)
    D, s2, mu, n = 6, 0.7, 1.5, 200_000
    sigmas = make_sigmas("geometric", 3.0, 0.1, 5)
    x = mu + math.sqrt(s2) * torch.randn(n, D, dtype=torch.float64)
    levels = torch.arange(n) % len(sigmas)
    g = torch.Generator().manual_seed(1)
    out = dsm_loss(gaussian_exact_score(mu, s2, sigmas), x, sigmas, 2.0, generator=g, level_index=levels)
    expected_per_level = 0.5 * D * s2 / (s2 + sigmas**2)
    sums, counts = per_level_mean(out.per_example, out.level_index, len(sigmas))
    assert torch.allclose(sums / counts, expected_per_level, rtol=0.02)
    assert out.loss.item() == pytest.approx(expected_per_level.mean().item(), rel=0.01)

    # A wrong score gives a larger loss: c times the exact score adds, in expectation,
    # 1/2 (c-1)^2 sigma^2 E|s|^2 = 1/2 (c-1)^2 D sigma^2 / (s^2 + sigma^2) per level.
    c = 1.5
    exact = gaussian_exact_score(mu, s2, sigmas)
    worse = dsm_loss(
        lambda x, i: c * exact(x, i), x, sigmas, 2.0, generator=torch.Generator().manual_seed(1), level_index=levels
    )
    excess = (0.5 * (c - 1) ** 2 * D * sigmas**2 / (s2 + sigmas**2)).mean()
    assert worse.loss.item() == pytest.approx((expected_per_level.mean() + excess).item(), rel=0.02)
    # ignoring the noise level (always the smallest sigma's score) is worse too
    blind = dsm_loss(
        gaussian_exact_score(mu, s2, sigmas * 0 + sigmas[-1]),
        x,
        sigmas,
        2.0,
        generator=torch.Generator().manual_seed(1),
        level_index=levels,
    )
    assert blind.loss > 1.5 * out.loss


def test_dsm_target_is_minus_z_over_sigma():
    # A score equal to the DSM target -z/sigma (known only with the same noise) gives loss 0.
    sigmas = make_sigmas("geometric", 1.0, 0.1, 3)
    x = torch.rand(8, 1, 4, 4, dtype=torch.float64)
    levels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=x.dtype)

    def oracle(perturbed, i):
        return -(perturbed - x) / sigmas[i].view(-1, 1, 1, 1) ** 2

    out = dsm_loss(oracle, x, sigmas, generator=torch.Generator().manual_seed(3), level_index=levels)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-20)
    # and the per-example weighting is sigma^anneal_power: a zero score gives 1/2 |z|^2 sigma^(p-2)
    zero = dsm_loss(
        lambda p, i: torch.zeros_like(p),
        x,
        sigmas,
        anneal_power=3.0,
        generator=torch.Generator().manual_seed(3),
        level_index=levels,
    )
    expected = 0.5 * (z**2).flatten(1).sum(1) * sigmas[levels]
    assert torch.allclose(zero.per_example, expected)


def test_levels_drawn_uniformly():
    sigmas = make_sigmas("geometric", 1.0, 0.01, 4)
    out = dsm_loss(
        lambda x, i: torch.zeros_like(x), torch.zeros(40_000, 2), sigmas, generator=torch.Generator().manual_seed(0)
    )
    counts = torch.bincount(out.level_index, minlength=4).double() / 40_000
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)
