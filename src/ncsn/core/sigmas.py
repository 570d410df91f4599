"""Noise levels sigma_1 > sigma_2 > ... > sigma_L.

This is the single definition of the noise levels used by the loss, the sampler and the
networks. Order convention (the reference code's): index 0 holds the *largest* sigma,
index L-1 the smallest, so ``level_index`` i in the code is sigma_{i+1} in the papers.

NCSN (Song & Ermon 2019, Sec. 4.2) uses a geometric sequence; the linear sequence is offered
for ablations. Values are computed element by element with Python's float arithmetic and
``math`` (IEEE-754 double; the C library's exp/log), not with vectorised tensor kernels, whose
results differ in the last bit between processors (MKL's exp takes another code path on an
AVX-512 Intel CPU than on an AVX2 AMD one). So every machine gets the same float64 levels; they
are cast only where they are used.
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
    if kind == "geometric":
        return torch.tensor(geometric_sigmas(sigma_begin, sigma_end, num_scales), dtype=torch.float64)
    span = sigma_end - sigma_begin
    return torch.tensor([sigma_begin + i / (num_scales - 1) * span for i in range(num_scales)], dtype=torch.float64)


def geometric_sigmas(sigma_max: float, sigma_min: float, num: int) -> list:
    """``num`` >= 2 log-uniformly spaced floats from ``sigma_max`` down to ``sigma_min``:
    exp(log sigma_max + i / (num - 1) (log sigma_min - log sigma_max)), i = 0 .. num - 1.
    The one geometric formula: the training levels and the samplers' sigma grids both use it."""
    la, lb = math.log(sigma_max), math.log(sigma_min)
    return [math.exp(la + i / (num - 1) * (lb - la)) for i in range(num)]
