"""Training-time data transforms of the papers, on float tensors in [0, 1]."""

from __future__ import annotations

import torch


def uniform_dequantize(x: torch.Tensor, levels: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
    """x * (levels-1)/levels + U(0, 1)/levels: for 8-bit images x*255/256 + U/256 (NCSN).

    Maps the grid k/(levels-1) onto [k/levels, (k+1)/levels), so values stay in [0, 1) and
    each pixel moves by less than 1/levels.
    """
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return x * ((levels - 1) / levels) + u / levels


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip one image (C, H, W) left-right with probability p."""
    if torch.rand((), generator=generator) < p:
        return x.flip(-1)
    return x
