"""Euler's method on the probability-flow ODE dx/dsigma = -sigma s(x, sigma) (ode.py's ODE, first
order): x <- x + (sigma_(i+1) - sigma_i) (-sigma_i s(x, sigma_i)) down the ODE's grid, one network
evaluation per step; with denoising a last step to sigma = 0 (Tweedie's x + sigma_L^2 s).
NFE = num_steps - 1 (+ 1 with denoising)."""

from __future__ import annotations

import torch

from .kinds import Kind, check_grid
from .langevin import LangevinResult, progress_bar


class Euler(Kind):
    name = "euler"

    def __init__(self, num_steps: int | None = None, rho: float | None = 7.0):
        check_grid(num_steps, rho)
        self.num_steps, self.rho = num_steps, None if rho is None else float(rho)

    @torch.no_grad()
    def run(self, score, sigmas, grid, x, noise, denoise, keep_frames=False, progress=True, hooks=None):
        sig, frames = grid.sigmas, []
        bar = progress_bar(len(sig) - 1, "Euler", progress)
        for k in range(len(sig) - 1):
            x = x + (sig[k + 1] - sig[k]) * -sig[k] * score(x, grid.cond(k, x))
            bar.update(1)
            frames += [x.detach().cpu()] if keep_frames else []
        bar.close()
        if not denoise:
            return LangevinResult(x, x, frames, len(sig) - 1)
        return LangevinResult(x + sig[-1] ** 2 * score(x, grid.cond(len(sig) - 1, x)), x, frames, len(sig))

    def nfe(self, num_levels, denoise):
        return self._steps(num_levels) - 1 + int(denoise)
