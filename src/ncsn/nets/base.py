"""What every score network shares: the ``sigmas`` buffer, reading the conditioning argument, and
the output division by sigma (NCSNv2 technique 3; EDM's preconditioning written once).

    score = net(x, level_index)   # level_index (N,) long: the training levels, index 0 = largest
    score = net(x, sigma)         # sigma (N,) floating: only if ``net.continuous`` (any sigma > 0)
    score = net.at_sigma(x, 0.3)  # the same, for one sigma

A network is sigma-continuous when nothing in it is indexed by the level: NCSNv2 (f(x) / sigma),
or the small nets built with ``conditioning='sigma'`` (a learned embedding of log sigma) or
``'none'`` (unconditional body, output / sigma). This base adds no parameters and registers only
``sigmas``, so the networks' state_dict keys are what they were.
"""

from __future__ import annotations

import math

import torch
from torch import nn

CONDITIONINGS = ("level", "sigma", "none")


class ScoreNet(nn.Module):
    """Base of the score networks: ``sigmas`` buffer, ``noise_level`` and ``scale``."""

    #: evaluable at any sigma (``net(x, sigma)`` with a floating tensor)
    continuous: bool = False
    sigmas: torch.Tensor  # the buffer registered in __init__

    def __init__(self, sigmas: torch.Tensor, scale_by_sigma: bool = True):
        super().__init__()
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32).clone())
        self.scale_by_sigma = scale_by_sigma

    def noise_level(self, cond: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(level_index or None, sigma (N,)) from the second argument of ``forward``."""
        if torch.is_floating_point(cond):
            if not self.continuous:
                raise TypeError(
                    f"{type(self).__name__} is conditioned on its {len(self.sigmas)} training levels: "
                    "call it with level indices (a long tensor), not sigma values"
                )
            return None, cond
        return cond, self.sigmas[cond]

    def scale(self, out: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """out / sigma per sample (with ``scale_by_sigma``), else out."""
        if not self.scale_by_sigma:
            return out
        return out / sigma.to(out.dtype).view(-1, *([1] * (out.dim() - 1)))

    def at_sigma(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """The score at noise level ``sigma`` (a number or (N,) tensor); sigma-continuous nets only."""
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self(x, s)


class SigmaFeatures(nn.Module):
    """Fixed Fourier features of log sigma: u = (log sigma - log sigma_1) / (log sigma_L - log sigma_1)
    (0 at the largest training level, 1 at the smallest), features sin(pi k u), cos(pi k u),
    k = 1..``num_freqs``. No parameters (the state_dict is unchanged)."""

    def __init__(self, num_freqs: int = 8):
        super().__init__()
        self.num_freqs = num_freqs

    @property
    def dim(self) -> int:
        return 2 * self.num_freqs

    def forward(self, sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        lo, hi = math.log(float(sigmas[0])), math.log(float(sigmas[-1]))
        span = (hi - lo) if hi != lo else 1.0
        u = (torch.log(sigma.float()) - lo) / span
        k = torch.arange(1, self.num_freqs + 1, device=sigma.device, dtype=torch.float32) * math.pi
        arg = u[:, None] * k[None]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
