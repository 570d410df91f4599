"""EDM preconditioning (Karras et al. 2022, Table 1 and Sec. 5) around a sigma-continuous network,
presented as a score.

The wrapped network F (its raw output: built with ``scale_by_sigma=False``) gives the denoiser

    D(x; sigma) = c_skip x + c_out F(c_in x; sigma),
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),   c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),

and ``forward`` returns the score of the smoothed data that D implies (Tweedie),

    s(x, sigma) = (D(x; sigma) - x) / sigma^2 = -x / (sigma^2 + sigma_data^2) + c_out F / sigma^2,

so every sampler and the DSM loss see a score network like any other. The second form is what is
computed: it has no cancellation between D and x at small sigma.

c_noise: EDM feeds F with ln(sigma) / 4. Here F receives sigma itself and embeds ln(sigma) with its
own conditioning (``SigmaFeatures``: an affine map of ln sigma onto [0, 1] over the training
levels), which carries the same information as ln(sigma) / 4 up to a fixed affine change.

sigma_data is the root mean square of the data values (the data here are in [0, 1], not centred:
with mean m, the c_skip that minimises the variance of F's target is E[x^2] / (E[x^2] + sigma^2),
so the RMS, not the standard deviation, plays EDM's sigma_data; digits 0.48, EDM's 0.5 for
centred data in [-1, 1]).

Loss weight. With x~ = x + sigma z the DSM residual of this score is

    s(x~, sigma) + z / sigma = (D(x~; sigma) - x~) / sigma^2 + (x~ - x) / sigma^2 = (D(x~; sigma) - x) / sigma^2,

so this repository's DSM term 1/2 lambda(sigma) ||s + z / sigma||^2 (``ncsn.core.losses.dsm_loss``) is
lambda(sigma) / (2 sigma^4) ||D - x||^2. EDM's loss is lambda_EDM ||D - x||^2 with
lambda_EDM = 1 / c_out^2 = (sigma^2 + sigma_data^2) / (sigma^2 sigma_data^2), which in F terms is
||F - F_target||^2 with unit weight at every sigma (D - x = c_out (F - F_target)). The papers'
lambda(sigma) = sigma^2 gives 1 / (2 sigma^2) ||D - x||^2 = c_out^2 / (2 sigma^2) ||F - F_target||^2,
i.e. EDM's weight times c_out^2 / (2 sigma^2) = sigma_data^2 / (2 (sigma^2 + sigma_data^2)): the
same up to a constant for sigma << sigma_data, but down-weighting the large sigmas by
sigma_data^2 / sigma^2. EDM's weight in score terms is therefore
lambda(sigma) = 2 sigma^4 / c_out^2 = 2 sigma^2 (1 + sigma^2 / sigma_data^2); ``ncsn.core.losses.dsm_loss``
applies it without the constant 2 when given ``sigma_data`` (``loss.weighting=edm``).

Plain torch.
"""

from __future__ import annotations

import torch

from ..core.checks import is_number
from .base import ScoreNet

PRECONDS = ("none", "edm")


def check_precond(precond: str = "none", sigma_data: float = 0.5) -> None:
    """The one rule for ``model.precond`` (one of ``PRECONDS``) and ``model.sigma_data`` (a number
    > 0): ``EDMPrecond`` applies it, and train.py's pre-flight calls it before any net is built."""
    if precond not in PRECONDS:
        raise ValueError(f"model.precond={precond!r} is invalid: must be {' or '.join(PRECONDS)}")
    if not (is_number(sigma_data) and sigma_data > 0):
        raise ValueError(f"model.sigma_data={sigma_data!r} is invalid: must be a number > 0")


def edm_coefficients(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) of EDM Table 1 at ``sigma`` (any shape)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt()


class EDMPrecond(ScoreNet):
    """``net`` (sigma-continuous, ``scale_by_sigma=False``) as the F of EDM's denoiser; called and
    read like any score network (``net(x, level_index)``, ``net(x, sigma)``, ``at_sigma``)."""

    continuous = True

    def __init__(self, net: ScoreNet, sigma_data: float = 0.5):
        super().__init__(net.sigmas, scale_by_sigma=False)
        if not getattr(net, "continuous", False):
            raise ValueError(
                f"model.precond='edm' is invalid for {type(net).__name__} conditioned on level indices: "
                "it needs a sigma-continuous net (model.conditioning=sigma)"
            )
        if getattr(net, "scale_by_sigma", True):
            raise ValueError(
                "model.precond='edm' needs model.scale_by_sigma=false (c_out replaces the division by sigma)"
            )
        check_precond("edm", sigma_data)
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        _, sigma = self.noise_level(cond)
        s = sigma.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        _, c_out, c_in = edm_coefficients(s, self.sigma_data)
        f = self.net(c_in * x, sigma.to(x.dtype))
        return -x / (s**2 + self.sigma_data**2) + c_out * f / s**2
