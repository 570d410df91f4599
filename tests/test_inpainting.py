"""Inpainting (NCSN Algorithm 2) with exact scores, and masks."""

import math

import pytest
import torch

from ncsn.core.sigmas import make_sigmas
from ncsn.core.toy import paper_mixture
from ncsn.sampling.inpainting import annealed_langevin_inpaint, apply_mask, load_mask, make_mask, save_mask

SIGMAS = make_sigmas("geometric", 10.0, 0.01, 10)


def gaussian_score(mean, cov, sigmas):
    """Exact score of N(mean, cov) perturbed by N(0, sigma^2 I): -(cov + sigma^2 I)^-1 (x - mean)."""
    mean, cov = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    precisions = [torch.linalg.inv(cov + float(s) ** 2 * torch.eye(len(mean))) for s in sigmas]

    def score(x, level_index):
        prec = torch.stack(precisions)[level_index]  # (N, D, D)
        return -(prec @ (x.double() - mean)[..., None])[..., 0].to(x.dtype)

    return score


def inpaint_x2(score, y1, n, renoise, seed=0, n_steps_each=40, step_lr=2e-4):
    gen = torch.Generator().manual_seed(seed)
    x_init = torch.rand(n, 2, generator=gen) * 8 - 4
    reference = torch.tensor([y1, 0.0]).expand(n, 2)
    mask = torch.tensor([1.0, 0.0])
    out = annealed_langevin_inpaint(
        score, x_init, reference, mask, SIGMAS, step_lr, n_steps_each, renoise=renoise, generator=gen, progress=False
    )
    assert torch.equal(out.samples[:, 0], reference[:, 0])
    return out.samples[:, 1].double()


@pytest.mark.parametrize("renoise", ["level", "step"])
def test_correlated_gaussian_conditional(renoise):
    mean, cov = [1.0, -1.0], [[1.0, 0.8], [0.8, 1.0]]
    y1 = 2.0
    x2 = inpaint_x2(gaussian_score(mean, cov, SIGMAS), y1, 2000, renoise)
    cond_mean = -1.0 + 0.8 * (y1 - 1.0)  # mu2 + S21 / S11 (y1 - mu1)
    cond_var = 1.0 - 0.8**2  # S22 - S21^2 / S11
    assert abs(float(x2.mean()) - cond_mean) < 0.05
    assert abs(float(x2.var()) / cond_var - 1.0) < 0.15


@pytest.mark.parametrize("renoise", ["level", "step"])
def test_mixture_conditional(renoise):
    # The paper's mixture 1/5 N((-5,-5), I) + 4/5 N((5,5), I) with x1 = -4 known: the exact
    # conditional x2 | x1 is a mixture of N(mu_k2, 1) with weights ~ w_k N(-4; mu_k1, 1), i.e.
    # N(-5, 1) up to 1e-17, although the unconditional weight of that mode is only 0.2.
    # (With a multimodal conditional the replacement method of Algorithm 2 is biased: the
    # noisy levels see x1 + sigma z, not x1. So the test uses a unimodal conditional.)
    mix = paper_mixture()
    y1 = -4.0
    logits = torch.log(mix.weights) - 0.5 * (y1 - mix.means[:, 0]) ** 2 / mix.stds**2
    r = torch.softmax(logits, 0)
    cond_mean = float((r * mix.means[:, 1]).sum())
    cond_var = float((r * (mix.stds**2 + mix.means[:, 1] ** 2)).sum()) - cond_mean**2
    sigmas = make_sigmas("geometric", 20.0, 0.1, 10)
    gen = torch.Generator().manual_seed(0)
    n = 2000
    x_init = torch.rand(n, 2, generator=gen) * 16 - 8
    reference = torch.tensor([[y1, 0.0]])
    out = annealed_langevin_inpaint(
        mix.score_fn(sigmas),
        x_init,
        reference,
        torch.tensor([1.0, 0.0]),
        sigmas,
        2e-3,
        40,
        renoise=renoise,
        generator=gen,
        progress=False,
    )
    x2 = out.samples[:, 1].double()
    assert torch.equal(out.samples[:, 0], torch.full((n,), y1))
    lower = x2 < 0
    assert float(lower.double().mean()) > 0.98
    assert abs(float(x2.median()) - cond_mean) < 0.1
    assert abs(float(x2[lower].mean()) - cond_mean) < 0.1
    assert abs(float(x2[lower].var()) / cond_var - 1.0) < 0.2


@pytest.mark.parametrize("renoise", ["level", "step"])
def test_known_pixels_follow_reference_plus_level_noise(renoise):
    n, sigmas, n_steps_each = 400, torch.tensor([3.0, 1.0, 0.3]), 4
    seen = []

    def score(x, level_index):
        seen.append((int(level_index[0]), x.clone()))
        return -x

    gen = torch.Generator().manual_seed(0)
    reference = torch.rand(n, 1, 4, 4, generator=gen)
    mask = make_mask("left_half", (1, 4, 4))
    x_init = torch.rand(n, 1, 4, 4, generator=gen)
    x_copy = x_init.clone()
    out = annealed_langevin_inpaint(
        score,
        x_init,
        reference,
        mask,
        sigmas,
        0.01,
        n_steps_each,
        renoise=renoise,
        denoise=True,
        generator=gen,
        keep_frames=True,
        progress=False,
    )
    known = mask.expand(n, 1, 4, 4) > 0.5
    assert len(seen) == len(sigmas) * n_steps_each + 1  # + the denoising step
    for i, sigma in enumerate(sigmas.tolist()):
        inputs = [x for lvl, x in seen[i * n_steps_each : (i + 1) * n_steps_each]]
        assert all(int(lvl) == i for lvl, _ in seen[i * n_steps_each : (i + 1) * n_steps_each])
        for x in inputs:
            dev = (x - reference)[known]
            assert abs(float(dev.std()) / sigma - 1.0) < 0.1 and abs(float(dev.mean())) < 0.1 * sigma
        same = [torch.equal(inputs[0][known], x[known]) for x in inputs[1:]]
        assert all(same) if renoise == "level" else not any(same)
        assert torch.equal(out.frames[i][known], inputs[-1][known])  # frame: known at the level's y~
    assert torch.equal(out.samples[known], reference[known])
    assert torch.equal(out.before_denoise[known], reference[known])
    assert not torch.equal(out.samples, out.before_denoise)  # denoise changed the unknown pixels
    assert (out.samples[~known] != x_init[~known]).float().mean() > 0.99
    assert torch.equal(x_init, x_copy)  # not modified in place


def test_reproducible_with_generator():
    score = gaussian_score([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], SIGMAS)
    a = inpaint_x2(score, 1.0, 50, "level", seed=3, n_steps_each=3)
    b = inpaint_x2(score, 1.0, 50, "level", seed=3, n_steps_each=3)
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        x = torch.zeros(2, 2)
        annealed_langevin_inpaint(score, x, x, torch.ones(2), SIGMAS, 0.1, 1, renoise="x")


def test_mask_kinds_shapes_and_fractions():
    m = make_mask("right_half", (3, 8, 10))
    assert m.shape == (1, 8, 10)
    assert m[..., :5].eq(1).all() and m[..., 5:].eq(0).all()
    m = make_mask("left_half", (2, 3, 8, 9))
    assert m.shape == (1, 1, 8, 9)
    assert m[..., :4].eq(0).all() and m[..., 4:].eq(1).all()
    m = make_mask("center_box", (16, 16), size=0.5)
    assert m.shape == (16, 16)
    assert m[4:12, 4:12].eq(0).all() and float(m.mean()) == 1 - 0.25
    gen = torch.Generator().manual_seed(0)
    m = make_mask("random", (64, 64), fraction=0.8, generator=gen)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(1 - m.mean()) - 0.8) < 0.03
    assert torch.equal(make_mask("right_half", (4, 4), invert=True), 1 - make_mask("right_half", (4, 4)))
    with pytest.raises(ValueError):
        make_mask("nonsense", (4, 4))


def test_png_mask_round_trip_and_resize(tmp_path):
    gen = torch.Generator().manual_seed(1)
    m = make_mask("random", (1, 12, 20), fraction=0.3, generator=gen)
    path = save_mask(m, tmp_path / "mask.png")
    assert torch.equal(make_mask(str(path), (3, 12, 20)), m)
    assert torch.equal(make_mask(path, (12, 20), invert=True), 1 - m[0])
    # nearest-neighbour resize of a half mask to another size stays a half mask
    save_mask(make_mask("right_half", (8, 8)), tmp_path / "half.png")
    assert torch.equal(load_mask(tmp_path / "half.png", (32, 32)), make_mask("right_half", (32, 32)))


def test_apply_mask():
    images = torch.rand(2, 3, 4, 4)
    mask = make_mask("center_box", images.shape, size=0.5)
    shown = apply_mask(images, mask, fill=0.5)
    assert torch.equal(shown[..., 0, :], images[..., 0, :])
    assert shown[..., 1:3, 1:3].eq(0.5).all()
    assert math.isclose(float((shown != images).float().mean()), 0.25, abs_tol=0.05)
