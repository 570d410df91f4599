"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): Heun on the probability-flow ODE
(ode.py) with fresh noise added before each step. At sigma_i in [s_tmin, s_tmax] the state is
first raised to sigma_hat = (1 + gamma) sigma_i, gamma = min(s_churn / N, sqrt(2) - 1) (N the
number of sigmas), by x_hat = x + sqrt(sigma_hat^2 - sigma_i^2) s_noise z; then one Heun step
from sigma_hat to sigma_(i+1). The added noise lets the sampler correct the errors the learned
score leaves in the flow, where the deterministic ODE carries them to the end; s_churn = 0 is
the ODE. The network is evaluated at sigma_hat, off the grid: sigma-continuous networks only.
NFE = 2 (num_steps - 1) (+ 1 with denoising: Tweedie's x + sigma_L^2 s at the last sigma)."""

from __future__ import annotations

import math

import torch

from ..core.checks import is_number
from .kinds import Kind, check, check_grid
from .langevin import LangevinResult, progress_bar


class EDM(Kind):
    name = "edm"

    def __init__(
        self,
        s_churn: float = 40.0,
        s_tmin: float = 0.0,
        s_tmax: float | None = None,
        s_noise: float = 1.0,
        num_steps: int | None = None,
        rho: float | None = 7.0,
    ):
        check(is_number(s_churn) and s_churn >= 0, "s_churn", s_churn, "a number >= 0")
        check(is_number(s_tmin) and s_tmin >= 0, "s_tmin", s_tmin, "a number >= 0")
        check(s_tmax is None or (is_number(s_tmax) and s_tmax > s_tmin), "s_tmax", s_tmax, "null or > s_tmin")
        check(is_number(s_noise) and s_noise > 0, "s_noise", s_noise, "a number > 0")
        check_grid(num_steps, rho)
        self.s_churn, self.s_tmin, self.s_noise = float(s_churn), float(s_tmin), float(s_noise)
        self.s_tmax = math.inf if s_tmax is None else float(s_tmax)
        self.num_steps, self.rho = num_steps, None if rho is None else float(rho)

    def grid(self, sigmas, continuous: bool = False):
        if not continuous:
            raise ValueError(
                "sampler=edm needs a sigma-continuous network (it evaluates the score between the grid's sigmas): "
                "this one is conditioned on its training levels; use sampler=ode or sampler=pc"
            )
        return super().grid(sigmas, continuous)

    @torch.no_grad()
    def run(self, score, sigmas, grid, x, noise, denoise, keep_frames=False, progress=True, hooks=None):
        sig, frames = [float(s) for s in grid.sigmas], []
        gamma_max = min(self.s_churn / len(sig), math.sqrt(2.0) - 1.0)

        def at(s: float, like: torch.Tensor) -> torch.Tensor:
            return torch.full((like.shape[0],), s, dtype=like.dtype, device=like.device)

        bar = progress_bar(len(sig) - 1, "EDM stochastic", progress)
        for i in range(len(sig) - 1):
            gamma = gamma_max if self.s_tmin <= sig[i] <= self.s_tmax else 0.0
            s_hat = sig[i] * (1.0 + gamma)
            if gamma > 0:
                x = x + math.sqrt(s_hat**2 - sig[i] ** 2) * self.s_noise * noise(x)
            d = -s_hat * score(x, at(s_hat, x))
            x_e = x + (sig[i + 1] - s_hat) * d
            x = x + (sig[i + 1] - s_hat) * 0.5 * (d - sig[i + 1] * score(x_e, at(sig[i + 1], x_e)))
            bar.update(1)
            frames += [x.detach().cpu()] if keep_frames else []
        bar.close()
        if not denoise:
            return LangevinResult(x, x, frames, 2 * (len(sig) - 1))
        return LangevinResult(x + sig[-1] ** 2 * score(x, at(sig[-1], x)), x, frames, 2 * (len(sig) - 1) + 1)

    def nfe(self, num_levels, denoise):
        return 2 * (self._steps(num_levels) - 1) + int(denoise)
