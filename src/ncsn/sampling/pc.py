"""Predictor-corrector sampling of the variance-exploding SDE (Song et al., ICLR 2021, "Score-Based
Generative Modeling through Stochastic Differential Equations", Algorithms 2-3 and the reference
code's ``pc_sampler``).

On the grid sigma_0 > ... > sigma_{N-1} (sigma_N = 0), for each i: ``n_corrector`` Langevin
corrector steps at sigma_i with the signal-to-noise step rule

    eps = 2 (snr ||z|| / ||s(x, sigma_i)||)^2,   x <- x + eps s + sqrt(2 eps) z,

then one reverse-diffusion predictor step

    x_mean = x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i),  x = x_mean + sqrt(sigma_i^2 - sigma_{i+1}^2) z.

The norms are taken per sample (the reference code averages them over the batch, which would make
a sample depend on its batch). ``denoise``: the result is the last x_mean (the reference's
``denoise=True``; the last predictor step without noise is Tweedie's x + sigma_{N-1}^2 s), else x.
N (1 + n_corrector) network evaluations.
"""

from __future__ import annotations

import math

import torch

from .grid import NoiseGrid
from .langevin import LangevinResult, NoiseFn, ScoreFn, progress_bar


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


@torch.no_grad()
def predictor_corrector(
    score: ScoreFn,
    x: torch.Tensor,
    grid: NoiseGrid,
    snr: float,
    n_corrector: int,
    noise: NoiseFn,
    denoise: bool = False,
    keep_frames: bool = False,
    progress: bool = True,
) -> LangevinResult:
    """Reverse-diffusion predictor + Langevin corrector from the initial state ``x`` (the paper:
    x ~ N(0, sigma_max^2 I))."""
    sig = list(grid.sigmas) + [0.0]
    frames = []
    x_mean = x
    bar = progress_bar(len(grid) * (1 + n_corrector), "predictor-corrector", progress)
    for i in range(len(grid)):
        cond = grid.cond(i, x)
        for _ in range(n_corrector):
            s = score(x, cond)
            z = noise(x)
            eps = 2.0 * (snr * _norms(z) / _norms(s).clamp_min(1e-30)) ** 2
            x = x + eps * s + torch.sqrt(2.0 * eps) * z
        s = score(x, cond)
        z = noise(x)
        d = sig[i] ** 2 - sig[i + 1] ** 2
        x_mean = x + d * s
        x = x_mean + math.sqrt(d) * z
        bar.update(1 + n_corrector)
        if keep_frames:
            frames.append(x.detach().cpu())
    bar.close()
    return LangevinResult(x_mean if denoise else x, x, frames, len(grid) * (1 + n_corrector))
