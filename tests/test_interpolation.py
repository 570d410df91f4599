"""NCSNv2 interpolation: slerp of the injected noise between two seeds."""

import math

import pytest
import torch

from ncsn.core.sigmas import make_sigmas
from ncsn.core.toy import paper_mixture
from ncsn.sampling import Annealed, Sampler
from ncsn.sampling.interpolation import SlerpNoise, interpolate, sample_from_seed, slerp, uniform_from_gaussian
from ncsn.sampling.seeds import SampleNoise


def test_slerp_endpoints_are_exact():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, 4, 4, generator=gen), torch.randn(5, 3, 4, 4, generator=gen)
    out = slerp(a, b, torch.tensor([0.0, 0.3, 1.0]))
    assert out.shape == (5, 3, 3, 4, 4)
    assert torch.equal(out[:, 0], a) and torch.equal(out[:, 2], b)


def test_slerp_follows_the_great_circle():
    a = torch.tensor([[1.0, 0.0, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0]])
    t = torch.linspace(0, 1, 7)
    out = slerp(a, b, t)[0]
    expected = torch.stack([torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2), torch.zeros_like(t)], 1)
    torch.testing.assert_close(out, expected)
    # equal norms stay equal, and the angle to a grows linearly in t
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 50, generator=gen).double(), torch.randn(4, 50, generator=gen).double()
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    out = slerp(a, b, t)
    torch.testing.assert_close(out.norm(dim=-1), a.norm(dim=1, keepdim=True).expand(4, 7))
    omega = torch.arccos((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)))
    angle = torch.arccos(((out * a[:, None]).sum(-1) / (out.norm(dim=-1) * a.norm(dim=1)[:, None])).clamp(-1, 1))
    torch.testing.assert_close(angle, omega[:, None] * t[None].double(), atol=1e-6, rtol=0)


def test_slerp_parallel_and_zero_vectors_fall_back_to_lerp():
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    b = torch.tensor([[2.0, 4.0], [1.0, 1.0]])
    out = slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 1], (a + b) / 2)


def test_uniform_from_gaussian():
    g = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    u = uniform_from_gaussian(g, -1.0, 3.0)
    assert float(u.min()) >= -1.0 and float(u.max()) <= 3.0
    assert abs(float(u.mean()) - 1.0) < 0.02 and abs(float(u.var()) - 16 / 12) < 0.02


def test_slerp_noise_rows_and_endpoints():
    t = torch.tensor([0.0, 0.5, 1.0])
    rows = torch.arange(2)
    both = SlerpNoise(SampleNoise(7, rows), SampleNoise(8, rows), t)
    only_a, only_b = SampleNoise(7, rows), SampleNoise(8, rows)
    for _ in range(3):  # successive draws stay in step with the single-seed streams
        z, za, zb = both.normal((3,)), only_a.normal((3,)), only_b.normal((3,))
        assert z.shape == (6, 3)
        assert torch.equal(z[0::3], za) and torch.equal(z[2::3], zb)
        assert not torch.equal(z[1::3], za)
    with pytest.raises(ValueError):
        both(torch.zeros(2, 3))


def test_interpolation_endpoints_equal_single_seed_samples():
    mixture = paper_mixture()
    sigmas = make_sigmas("geometric", 20.0, 1.0, 5)
    score = mixture.score_fn(sigmas)
    s = Sampler(Annealed(0.1, 10), init_low=-8.0, init_high=8.0, denoise=True, n_samples=3)
    rows = interpolate(s, score, sigmas, (3, 2), 1, 2, n_interp=5, progress=False)
    assert rows.shape == (3, 5, 2)
    a = sample_from_seed(s, score, sigmas, (3, 2), 1, progress=False)
    b = sample_from_seed(s, score, sigmas, (3, 2), 2, progress=False)
    assert torch.equal(rows[:, 0], a) and torch.equal(rows[:, -1], b)
    assert torch.equal(a, s.draw(score, sigmas, (2,), 1, progress=False).samples)  # = mode=samples with that seed
    assert not torch.equal(a, b)
    assert torch.isfinite(rows).all()
    # reproducible per seed pair; the middle of a row is neither endpoint
    again = interpolate(s, score, sigmas, (3, 2), 1, 2, n_interp=5, progress=False)
    assert torch.equal(rows, again)
    assert not torch.equal(rows[:, 2], a) and not torch.equal(rows[:, 2], b)


def test_interpolation_is_continuous_in_t():
    # with a linear score (Gaussian target) the sample is a smooth function of the noise:
    # neighbouring interpolants are closer than the endpoints.
    sigmas = torch.tensor([1.0, 0.5])
    s = Sampler(Annealed(0.05, 5), denoise=False)
    rows = interpolate(s, lambda x, i: -x, sigmas, (4, 1, 3, 3), 3, 4, n_interp=9, progress=False)
    steps = (rows[:, 1:] - rows[:, :-1]).flatten(2).norm(dim=-1)
    ends = (rows[:, -1] - rows[:, 0]).flatten(1).norm(dim=-1)
    assert (steps.max(dim=1).values < 0.5 * ends).all()
