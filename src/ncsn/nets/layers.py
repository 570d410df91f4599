"""Building blocks of the RefineNet score networks of NCSN (v1) and NCSNv2.

Every block takes ``(x, level_index)`` so the same cascade serves both papers:

* NCSN v1: every normalization is a CIN++ indexed by the noise level, including the ones
  inside the RefineNet blocks, and chained residual pooling uses 5x5 *average* pooling.
* NCSNv2: residual blocks use the unconditional IN++ (the level index is ignored), the RefineNet
  blocks have no normalization at all, and chained residual pooling uses 5x5 *max* pooling.

Convolution biases follow the reference code (ermongroup/ncsn, ermongroup/ncsnv2), since the
parameter counts are checked against it: the convs of the residual units and of chained residual
pooling have no bias, every other conv has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .normalization import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus


class LevelNorm(nn.Module):
    """IN++ that takes the level index: CIN++ if ``num_scales`` is given, else plain IN++."""

    def __init__(self, num_features: int, num_scales: int | None):
        super().__init__()
        self.conditional = num_scales is not None
        self.norm: nn.Module
        if num_scales is not None:
            self.norm = ConditionalInstanceNorm2dPlus(num_features, num_scales)
        else:
            self.norm = InstanceNorm2dPlus(num_features)

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        return self.norm(x, level_index) if self.conditional else self.norm(x)


def _mean_pool(x: torch.Tensor) -> torch.Tensor:
    # The reference averages the four strided sub-grids x[::2, ::2], x[1::2, ::2], ...; for even
    # sizes that is exactly a 2x2 average pool with stride 2.
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: norm, ELU, conv, norm, ELU, conv, plus a shortcut.

    ``downsample``: the second conv and the shortcut (a 1x1 conv) are followed by a 2x mean pool.
    ``learned_shortcut``: the shortcut is a conv (required if the channels change or on
    downsampling). Without downsampling the shortcut conv is a 3x3 conv with the block's dilation:
    the reference builds the first block of each dilated stage as a "down" block whose dilation
    replaces the downsampling but which keeps the learned (dilated 3x3) shortcut although the
    channel count does not change; we do the same so the parameter counts match.
    The first conv keeps the input width, the second maps to ``out_channels`` (as the reference).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_scales: int | None,
        dilation: int,
        downsample: bool,
        learned_shortcut: bool,
    ):
        super().__init__()
        if (in_channels != out_channels or downsample) and not learned_shortcut:
            raise ValueError("a residual block that changes channels or resolution needs learned_shortcut")
        if downsample and dilation != 1:
            raise ValueError("a residual block either downsamples or is dilated, not both")
        self.downsample = downsample
        self.norm1 = LevelNorm(in_channels, num_scales)
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = LevelNorm(in_channels, num_scales)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
        self.act = nn.ELU()
        if not learned_shortcut:
            self.shortcut = None
        elif downsample:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x, level_index)))
        h = self.conv2(self.act(self.norm2(h, level_index)))
        skip = x if self.shortcut is None else self.shortcut(x)
        if self.downsample:
            h, skip = _mean_pool(h), _mean_pool(skip)
        return skip + h


def _conv3x3_no_bias(channels: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, padding=1, bias=False)


class ResidualConvUnit(nn.Module):
    """RefineNet RCU: ``num_blocks`` residual units, each ([norm], ELU, conv 3x3) twice."""

    def __init__(self, features: int, num_blocks: int, num_scales: int | None, normalize: bool):
        super().__init__()
        num_stages = 2
        self.num_stages = num_stages
        self.convs = nn.ModuleList(_conv3x3_no_bias(features) for _ in range(num_blocks * num_stages))
        self.norms = (
            nn.ModuleList(LevelNorm(features, num_scales) for _ in range(num_blocks * num_stages))
            if normalize
            else None
        )
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        for start in range(0, len(self.convs), self.num_stages):
            h = x
            for k in range(start, start + self.num_stages):
                if self.norms is not None:
                    h = self.norms[k](h, level_index)
                h = self.convs[k](self.act(h))
            x = x + h
        return x


class MultiResolutionFusion(nn.Module):
    """RefineNet MRF: per input [norm] and conv 3x3 to ``features``, bilinear upsampling, sum."""

    def __init__(self, in_planes: Sequence[int], features: int, num_scales: int | None, normalize: bool):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c, features, 3, padding=1) for c in in_planes)
        self.norms = nn.ModuleList(LevelNorm(c, num_scales) for c in in_planes) if normalize else None

    def forward(self, xs: Sequence[torch.Tensor], level_index: torch.Tensor, size) -> torch.Tensor:
        out: torch.Tensor | float = 0.0
        for k, x in enumerate(xs):
            if self.norms is not None:
                x = self.norms[k](x, level_index)
            h = self.convs[k](x)
            out = out + F.interpolate(h, size=size, mode="bilinear", align_corners=True)
        return cast(torch.Tensor, out)  # xs is never empty


class ChainedResidualPooling(nn.Module):
    """RefineNet CRP: ELU, then two chained stages ([norm], 5x5 stride-1 pool, conv), each added."""

    def __init__(self, features: int, num_scales: int | None, normalize: bool, max_pool: bool):
        super().__init__()
        num_stages = 2
        self.convs = nn.ModuleList(_conv3x3_no_bias(features) for _ in range(num_stages))
        self.norms = nn.ModuleList(LevelNorm(features, num_scales) for _ in range(num_stages)) if normalize else None
        pool = nn.MaxPool2d if max_pool else nn.AvgPool2d
        self.pool = pool(kernel_size=5, stride=1, padding=2)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        path = x
        for k, conv in enumerate(self.convs):
            if self.norms is not None:
                path = self.norms[k](path, level_index)
            path = conv(self.pool(path))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """One RefineNet block: an RCU (2 units) per input, MRF (if >1 input), CRP, output RCU.

    The output RCU has 3 units in the last block of the cascade (``end``) and 1 otherwise.
    ``normalize`` puts LevelNorms (CIN++ with ``num_scales`` levels, or IN++ if None) in front of
    every conv, as NCSN v1; NCSNv2 uses none. ``max_pool``: max (NCSNv2) or average (v1) pooling.
    """

    def __init__(
        self,
        in_planes: Sequence[int],
        features: int,
        num_scales: int | None,
        normalize: bool,
        max_pool: bool,
        end: bool,
    ):
        super().__init__()
        self.adapt = nn.ModuleList(ResidualConvUnit(c, 2, num_scales, normalize) for c in in_planes)
        self.fusion = MultiResolutionFusion(in_planes, features, num_scales, normalize) if len(in_planes) > 1 else None
        if self.fusion is None and in_planes[0] != features:
            raise ValueError("a single-input RefineBlock must keep the channel count")
        self.pooling = ChainedResidualPooling(features, num_scales, normalize, max_pool)
        self.output = ResidualConvUnit(features, 3 if end else 1, num_scales, normalize)

    def forward(self, xs: Sequence[torch.Tensor], level_index: torch.Tensor, size) -> torch.Tensor:
        hs = [adapt(x, level_index) for adapt, x in zip(self.adapt, xs)]
        h = hs[0] if self.fusion is None else self.fusion(hs, level_index, size)
        return self.output(self.pooling(h, level_index), level_index)
