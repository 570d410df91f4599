"""Noise levels sigma_1 > sigma_2 > ... > sigma_L.

This is the single definition of the noise levels used by the loss, the sampler and the
networks. Order convention (the reference code's): index 0 holds the *largest* sigma,
index L-1 the smallest, so ``level_index`` i in the code is sigma_{i+1} in the papers.

NCSN (Song & Ermon 2019, Sec. 4.2) uses a geometric sequence; the linear sequence is offered
for ablations. Values are computed in float64 and only cast where they are used.
"""

from __future__ import annotations

import math

import torch

KINDS = ("geometric", "linear")


def make_sigmas(kind: str, sigma_begin: float, sigma_end: float, num_scales: int) -> torch.Tensor:
    """Return the L noise levels as a float64 tensor, largest first.

    geometric: sigma_i = sigma_begin * (sigma_end / sigma_begin) ** (i / (L - 1))
    linear:    sigma_i = sigma_begin + (sigma_end - sigma_begin) * i / (L - 1)

    With ``num_scales == 1`` the single level is ``sigma_end`` (plain, non-annealed DSM).
    """
    if kind not in KINDS:
        raise ValueError(f"sigmas.kind={kind!r} is not one of {KINDS}")
    if num_scales < 1:
        raise ValueError(f"sigmas.num_scales={num_scales} must be >= 1")
    if not (sigma_end > 0 and math.isfinite(sigma_begin)):
        raise ValueError(f"sigmas.sigma_end={sigma_end} must be > 0 and sigma_begin finite")
    if num_scales > 1 and not sigma_begin > sigma_end:
        raise ValueError(f"sigmas.sigma_begin={sigma_begin} must be > sigmas.sigma_end={sigma_end} (index 0 = largest)")
    if num_scales == 1:
        return torch.tensor([float(sigma_end)], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, num_scales, dtype=torch.float64)
    if kind == "geometric":
        return torch.exp(math.log(sigma_begin) + t * (math.log(sigma_end) - math.log(sigma_begin)))
    return sigma_begin + t * (sigma_end - sigma_begin)
