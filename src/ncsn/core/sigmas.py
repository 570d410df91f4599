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

from .checks import is_int, is_number

KINDS = ("geometric", "linear")


def make_sigmas(kind: str, sigma_begin: float, sigma_end: float, num_scales: int) -> torch.Tensor:
    """Return the L noise levels as a float64 tensor, largest first.

    geometric: sigma_i = sigma_begin * (sigma_end / sigma_begin) ** (i / (L - 1))
    linear:    sigma_i = sigma_begin + (sigma_end - sigma_begin) * i / (L - 1)

    With ``num_scales == 1`` the single level is ``sigma_end`` (plain, non-annealed DSM).
    """
    check_sigmas(kind, sigma_begin, sigma_end, num_scales)
    if num_scales == 1:
        return torch.tensor([float(sigma_end)], dtype=torch.float64)
    if kind == "geometric":
        return torch.tensor(geometric_sigmas(sigma_begin, sigma_end, num_scales), dtype=torch.float64)
    span = sigma_end - sigma_begin
    return torch.tensor([sigma_begin + i / (num_scales - 1) * span for i in range(num_scales)], dtype=torch.float64)


def check_sigmas(kind: str, sigma_begin: float, sigma_end: float, num_scales: int) -> None:
    """The values ``make_sigmas`` takes (the ``sigmas`` node): a one-line ValueError naming the key,
    the value and what is allowed. The pre-flight check (``validate_sigmas``) calls this too."""
    if kind not in KINDS:
        raise ValueError(f"sigmas.kind={kind!r} is invalid: must be 'geometric' or 'linear' (or sigmas=auto)")
    if not (is_number(sigma_end) and sigma_end > 0):
        raise ValueError(f"sigmas.sigma_end={sigma_end!r} is invalid: must be a number > 0")
    if not (is_int(num_scales) and num_scales >= 1):
        raise ValueError(f"sigmas.num_scales={num_scales!r} is invalid: must be an integer >= 1")
    if num_scales > 1 and not (is_number(sigma_begin) and sigma_begin > sigma_end):
        raise ValueError(
            f"sigmas.sigma_begin={sigma_begin!r} is invalid: must be a number > sigmas.sigma_end={sigma_end} "
            "(index 0 is the largest sigma)"
        )


def geometric_sigmas(sigma_max: float, sigma_min: float, num: int) -> list:
    """``num`` >= 2 log-uniformly spaced floats from ``sigma_max`` down to ``sigma_min``:
    exp(log sigma_max + i / (num - 1) (log sigma_min - log sigma_max)), i = 0 .. num - 1.
    The one geometric formula: the training levels and the samplers' sigma grids both use it."""
    la, lb = math.log(sigma_max), math.log(sigma_min)
    return [math.exp(la + i / (num - 1) * (lb - la)) for i in range(num)]
