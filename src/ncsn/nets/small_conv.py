"""A small noise-conditional convolutional score network, sized for 8x8 digits on a CPU.

The same building blocks as the NCSN RefineNet (CIN++ conditioning, ELU, pre-activation
residual blocks, input mapped to 2x - 1) at a size that trains in minutes on two cores.
"""

from __future__ import annotations

import torch
from torch import nn

from .normalization import ConditionalInstanceNorm2dPlus


class _CondResBlock(nn.Module):
    def __init__(self, channels: int, num_scales: int, dilation: int):
        super().__init__()
        self.norm1 = ConditionalInstanceNorm2dPlus(channels, num_scales)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = ConditionalInstanceNorm2dPlus(channels, num_scales)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.act = nn.ELU()

    def forward(self, x, y):
        h = self.conv1(self.act(self.norm1(x, y)))
        h = self.conv2(self.act(self.norm2(h, y)))
        return x + h


class SmallConvScoreNet(nn.Module):
    """Begin conv, ``num_blocks`` conditional residual blocks (dilations 1, 2, 1, 2, ...), end conv."""

    def __init__(
        self,
        sigmas: torch.Tensor,
        in_channels: int = 1,
        ngf: int = 64,
        num_blocks: int = 4,
        scale_by_sigma: bool = True,
    ):
        super().__init__()
        if ngf < 2 or num_blocks < 1:
            raise ValueError(f"model.ngf={ngf} must be >= 2 and model.num_blocks={num_blocks} >= 1")
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32).clone())
        self.scale_by_sigma = scale_by_sigma
        num_scales = len(self.sigmas)
        self.begin = nn.Conv2d(in_channels, ngf, 3, padding=1)
        self.blocks = nn.ModuleList(_CondResBlock(ngf, num_scales, 1 + (k % 2)) for k in range(num_blocks))
        self.end_norm = ConditionalInstanceNorm2dPlus(ngf, num_scales)
        self.end = nn.Conv2d(ngf, in_channels, 3, padding=1)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        h = self.begin(2.0 * x - 1.0)
        for block in self.blocks:
            h = block(h, level_index)
        out = self.end(self.act(self.end_norm(h, level_index)))
        if self.scale_by_sigma:
            out = out / self.sigmas[level_index].to(out.dtype).view(-1, 1, 1, 1)
        return out
