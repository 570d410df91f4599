"""Probability-flow ODE of the variance-exploding process, solved with Heun's method (Karras et
al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Algorithm 1 with
S_churn = 0).

For x_sigma = x_0 + sigma z the ODE is dx/dsigma = -sigma grad log p_sigma(x) = -sigma s(x, sigma).
Heun step from sigma_i to sigma_{i+1}: d = -sigma_i s(x, sigma_i), x' = x + (sigma_{i+1} - sigma_i) d,
then (if sigma_{i+1} > 0) x <- x + (sigma_{i+1} - sigma_i) (d + d') / 2 with d' at (x', sigma_{i+1}).
The sampler starts from x ~ N(mean, sigma_max^2 I) and runs deterministically down the grid
(Karras' rho spacing on sigma-continuous networks); ``denoise`` adds the final Euler step from
sigma_min to 0, which is Tweedie's x + sigma_min^2 s. 2 (N - 1) (+ 1) network evaluations.
The same solver run upwards maps data to noise (``heun_path`` with an increasing path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .grid import NoiseGrid
from .langevin import LangevinResult, ScoreFn, progress_bar

CondFn = Callable[[int, torch.Tensor], torch.Tensor]


@torch.no_grad()
def heun_path(
    score: ScoreFn,
    x: torch.Tensor,
    path: Sequence[float],
    cond: CondFn,
    keep_frames: bool = False,
    progress: bool = False,
) -> tuple[torch.Tensor, list, int]:
    """Integrate the probability-flow ODE along ``path`` (sigmas, decreasing or increasing; a
    final 0 makes the last step an Euler step). ``cond(k, x)`` is the network's conditioning at
    path[k]. Returns (x, frames after each step, network evaluations)."""
    frames, nfe = [], 0
    bar = progress_bar(len(path) - 1, "probability-flow ODE", progress)
    for k in range(len(path) - 1):
        s_k, s_next = float(path[k]), float(path[k + 1])
        d = -s_k * score(x, cond(k, x))
        x_e = x + (s_next - s_k) * d
        nfe += 1
        if s_next > 0:
            d2 = -s_next * score(x_e, cond(k + 1, x_e))
            x = x + (s_next - s_k) * 0.5 * (d + d2)
            nfe += 1
        else:
            x = x_e
        bar.update(1)
        if keep_frames:
            frames.append(x.detach().cpu())
    bar.close()
    return x, frames, nfe


@torch.no_grad()
def probability_flow(
    score: ScoreFn,
    x: torch.Tensor,
    grid: NoiseGrid,
    denoise: bool = False,
    keep_frames: bool = False,
    progress: bool = True,
) -> LangevinResult:
    """Heun down ``grid`` from ``x`` (noise at sigma_max); with ``denoise`` a last step to 0."""
    before, frames, nfe = heun_path(score, x, grid.sigmas, grid.cond, keep_frames, progress)
    if not denoise:
        return LangevinResult(before, before, frames, nfe)
    s = grid.sigmas[-1]
    samples = before + s**2 * score(before, grid.cond(len(grid) - 1, before))
    return LangevinResult(samples, before, frames, nfe + 1)
