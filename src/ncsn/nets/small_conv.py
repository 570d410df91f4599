"""A small noise-conditional convolutional score network, sized for 8x8 digits on a CPU.

The same building blocks as the NCSN RefineNet (CIN++ conditioning, ELU, pre-activation
residual blocks, input mapped to 2x - 1) at a size that trains in minutes on two cores.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import CONDITIONINGS, ScoreNet, SigmaFeatures
from .normalization import ConditionalInstanceNorm2dPlus, InstanceNorm2dPlus


def _level_norm(channels: int, num_scales: int, conditioning: str, num_features: int) -> nn.Module:
    """CIN++ indexed by the level ('level'), CIN++ whose gamma, alpha, beta are a learned linear
    map of sigma features ('sigma'), or the unconditional IN++ of NCSNv2 ('none')."""
    if conditioning == "level":
        return ConditionalInstanceNorm2dPlus(channels, num_scales)
    if conditioning == "none":
        return _Unconditional(InstanceNorm2dPlus(channels))
    norm = ConditionalInstanceNorm2dPlus(channels, 1)
    init = norm.embed.weight.detach()[0].clone()  # gamma, alpha ~ N(1, 0.02), beta = 0
    embed = nn.Linear(num_features, 3 * channels)
    with torch.no_grad():
        embed.weight.zero_()
        embed.bias.copy_(init)
    norm.embed = embed  # type: ignore[assignment]  # a linear map of sigma features in place of the Embedding
    return norm


class _Unconditional(nn.Module):
    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x, cond):
        return self.norm(x)


class _CondResBlock(nn.Module):
    def __init__(self, channels: int, num_scales: int, dilation: int, conditioning: str = "level", num_features=0):
        super().__init__()
        self.norm1 = _level_norm(channels, num_scales, conditioning, num_features)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.norm2 = _level_norm(channels, num_scales, conditioning, num_features)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.act = nn.ELU()

    def forward(self, x, cond):
        h = self.conv1(self.act(self.norm1(x, cond)))
        h = self.conv2(self.act(self.norm2(h, cond)))
        return x + h


class SmallConvScoreNet(ScoreNet):
    """Begin conv, ``num_blocks`` conditional residual blocks (dilations 1, 2, 1, 2, ...), end conv.

    ``conditioning``: 'level' (CIN++ per training level, the default), 'sigma' (CIN++ parameters
    from a learned linear map of log-sigma features: any sigma) or 'none' (NCSNv2: unconditional
    IN++, output / sigma; needs ``scale_by_sigma``). The last two are sigma-continuous.
    """

    def __init__(
        self,
        sigmas: torch.Tensor,
        in_channels: int = 1,
        ngf: int = 64,
        num_blocks: int = 4,
        scale_by_sigma: bool = True,
        conditioning: str = "level",
    ):
        super().__init__(sigmas, scale_by_sigma)
        if ngf < 2 or num_blocks < 1:
            raise ValueError(f"model.ngf={ngf} must be >= 2 and model.num_blocks={num_blocks} >= 1")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"model.conditioning={conditioning!r} is invalid: must be one of {CONDITIONINGS}")
        if conditioning == "none" and not scale_by_sigma:
            raise ValueError("model.conditioning='none' needs model.scale_by_sigma=true (else sigma is never seen)")
        self.conditioning = conditioning
        self.continuous = conditioning != "level"
        num_scales = len(self.sigmas)
        nf = 0
        if conditioning == "sigma":
            self.features = SigmaFeatures()
            nf = self.features.dim
        self.begin = nn.Conv2d(in_channels, ngf, 3, padding=1)
        self.blocks = nn.ModuleList(
            _CondResBlock(ngf, num_scales, 1 + (k % 2), conditioning, nf) for k in range(num_blocks)
        )
        self.end_norm = _level_norm(ngf, num_scales, conditioning, nf)
        self.end = nn.Conv2d(ngf, in_channels, 3, padding=1)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        level, sigma = self.noise_level(level_index)
        cond = self.features(sigma, self.sigmas).to(x.dtype) if self.conditioning == "sigma" else level
        h = self.begin(2.0 * x - 1.0)
        for block in self.blocks:
            h = block(h, cond)
        out = self.end(self.act(self.end_norm(h, cond)))
        return self.scale(out, sigma)
