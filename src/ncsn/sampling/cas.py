"""Consistent annealed sampling (CAS; Jolicoeur-Martineau et al., ICLR 2021, "Adversarial score
matching and improved sampling for image generation", Algorithm 2).

One step per noise level, with the step size of annealed Langevin, alpha_i = eta sigma_i^2,
eta (the paper's eps / sigma_L^2, ``sampler.eta``), and a noise coefficient chosen so that the iterate's noise stays at
the schedule's level: with the score s ~ (D(x) - x) / sigma_i^2 (D the denoiser),

    x_{i+1} = x_i + eta sigma_i^2 s(x_i, sigma_i) + beta_i sigma_{i+1} z,
    beta_i = sqrt(1 - (1 - eta)^2 (sigma_i / sigma_{i+1})^2),

so (1 - eta) sigma_i eps + beta_i sigma_{i+1} z has standard deviation sigma_{i+1}. (For a
geometric grid sigma_i / sigma_{i+1} = gamma, the paper's constant beta.) beta_i is real only
for 1 - sigma_{i+1} / sigma_i <= eta <= 1 + sigma_{i+1} / sigma_i. The last level has no
successor (sigma_{L+1} = 0): its step is x + eta sigma_L^2 s without noise, or, with
``denoise``, x + sigma_L^2 s (eta = 1, Tweedie's formula); both come from the same network
evaluation. L evaluations in all.

The consistency is exact for a point mass; for spread data the partial step also shrinks the
data part, so the iterate's variance falls short of data variance + sigma^2 by about eta / 2
(relative) at the end: small on fine grids (eta ~ 0.1), 20-45% on a 10-level grid (eta >= 0.4),
see tests/test_samplers.py.
"""

from __future__ import annotations

import math

import torch

from .grid import NoiseGrid
from .langevin import LangevinResult, NoiseFn, ScoreFn, progress_bar


def cas_betas(sigmas, eta: float) -> list:
    """beta_i for i = 0 .. L-2; ValueError (naming sampler.eta) where one is not real."""
    betas = []
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        b2 = 1.0 - (1.0 - eta) ** 2 * (s / s_next) ** 2
        if b2 < -1e-12:
            r = min(b / a for a, b in zip(sigmas[:-1], sigmas[1:]))  # the smallest sigma_(i+1) / sigma_i
            raise ValueError(
                f"sampler.eta={eta:.4g} is invalid for kind=cas on this grid: must be >= 1 - sigma_(i+1) / sigma_i "
                f"= {1.0 - r:.4g} and <= {1.0 + r:.4g} (CAS's noise coefficient is not real outside)"
            )
        betas.append(math.sqrt(max(b2, 0.0)))
    return betas


@torch.no_grad()
def consistent_annealed(
    score: ScoreFn,
    x: torch.Tensor,
    grid: NoiseGrid,
    eta: float,
    noise: NoiseFn,
    denoise: bool = False,
    keep_frames: bool = False,
    progress: bool = True,
) -> LangevinResult:
    """CAS on ``grid`` from the initial state ``x`` (the paper: x ~ N(0, sigma_1^2 I)) with the
    dimensionless step ``eta`` (the paper's eps = eta sigma_L^2)."""
    sig = list(grid.sigmas)
    betas = cas_betas(sig, eta)
    frames = []
    bar = progress_bar(len(sig), "CAS", progress)
    for i in range(len(sig) - 1):
        z = noise(x)
        x = x + eta * sig[i] ** 2 * score(x, grid.cond(i, x)) + betas[i] * sig[i + 1] * z
        bar.update(1)
        if keep_frames:
            frames.append(x.detach().cpu())
    s = score(x, grid.cond(len(sig) - 1, x))
    bar.update(1)
    bar.close()
    before = x + eta * sig[-1] ** 2 * s
    if keep_frames:
        frames.append(before.detach().cpu())
    samples = x + sig[-1] ** 2 * s if denoise else before
    return LangevinResult(samples, before, frames, len(sig))
