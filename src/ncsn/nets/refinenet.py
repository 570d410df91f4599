"""The RefineNet score network of NCSN (Song & Ermon 2019, Appendix B.1): CondRefineNetDilated.

Shared with NCSNv2 (``ncsnv2.py``) through ``RefineNetCascade``: an encoder of residual stages
(two pre-activation residual blocks each) and a cascade of RefineNet blocks that fuses the stage
outputs from the deepest back to the first, followed by norm, ELU and a 3x3 conv to the image.

Where the reference code (ermongroup/ncsn, models/cond_refinenet_dilated.py) differs from the
paper text, we follow the code:
* the first block of each dilated stage is built as a "down" block whose dilation replaces the
  downsampling; it keeps a learned dilated 3x3 shortcut conv although its channels do not change;
* in each residual block the first conv keeps the input width, the second changes it;
* the RefineNet convs of the residual conv units and of chained residual pooling have no bias;
* multi-resolution fusion upsamples bilinearly with ``align_corners=True``;
* the input is mapped to 2x - 1 (the reference's default, ``logit_transform: false``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import ScoreNet
from .layers import LevelNorm, RefineBlock, ResidualBlock

# (channel multiple of ngf, downsample x2, dilation) of each encoder stage.
StageSpec = tuple[int, bool, int]

# NCSN / NCSNv2: 4 stages, one downsampling (res2), then dilation 2 and 4 (res3, res4).
NCSN_STAGES: tuple[StageSpec, ...] = ((1, False, 1), (2, True, 1), (2, False, 2), (2, False, 4))


class RefineNetCascade(nn.Module):
    """Encoder stages + cascaded RefineNet blocks + end norm, ELU, conv (no output scaling).

    ``num_scales``: number of noise levels of every CIN++ (NCSN v1), or None for the unconditional
    IN++ (NCSNv2). ``refine_norm``: normalize inside the RefineNet blocks (v1) or not (v2).
    ``max_pool``: chained residual pooling with 5x5 max (v2) or average (v1) pooling.
    ``stages``: (channel multiple, downsample, dilation) per stage; the first must be (1, False, 1).
    The RefineNet block of stage k outputs the channels of stage k-1 (of stage 0 for the last).
    """

    def __init__(
        self,
        in_channels: int,
        ngf: int,
        num_scales: int | None,
        refine_norm: bool,
        max_pool: bool,
        stages: Sequence[StageSpec],
    ):
        super().__init__()
        if ngf < 1 or in_channels < 1:
            raise ValueError(f"model.ngf={ngf} and model.in_channels={in_channels} must be >= 1")
        if tuple(stages[0]) != (1, False, 1):
            raise ValueError(f"the first stage must be (1, False, 1), got {stages[0]}")
        widths = [mult * ngf for mult, _, _ in stages]
        self.begin_conv = nn.Conv2d(in_channels, ngf, 3, padding=1)
        self.stages = nn.ModuleList()
        prev = ngf
        for k, (width, (_, downsample, dilation)) in enumerate(zip(widths, stages)):
            first = ResidualBlock(prev, width, num_scales, dilation, downsample, learned_shortcut=k > 0)
            second = ResidualBlock(width, width, num_scales, dilation, False, learned_shortcut=False)
            self.stages.append(nn.ModuleList([first, second]))
            prev = width
        # refines[0] takes the deepest stage alone; refines[j] fuses stage (S-1-j) with refines[j-1].
        self.refines = nn.ModuleList()
        num_stages = len(stages)
        for j in range(num_stages):
            k = num_stages - 1 - j
            in_planes = [widths[k]] if j == 0 else [widths[k], widths[k]]
            out = widths[max(k - 1, 0)]
            self.refines.append(RefineBlock(in_planes, out, num_scales, refine_norm, max_pool, end=k == 0))
        self.end_norm = LevelNorm(ngf, num_scales)
        self.act = nn.ELU()
        self.end_conv = nn.Conv2d(ngf, in_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        h = self.begin_conv(2.0 * x - 1.0)
        features = []
        stage: nn.ModuleList
        for stage in self.stages:  # type: ignore[assignment]  # a ModuleList of ModuleLists
            for block in stage:
                h = block(h, level_index)
            features.append(h)
        out: torch.Tensor | None = None
        for refine, feat in zip(self.refines, reversed(features)):
            xs = [feat] if out is None else [feat, out]
            out = refine(xs, level_index, feat.shape[2:])
        return self.end_conv(self.act(self.end_norm(out, level_index)))


class CondRefineNetDilated(ScoreNet):
    """NCSN v1 score network: every normalization a CIN++ of the noise level; raw score output.

    28x28 (MNIST, ngf 64) and 32x32 (CIFAR-10, CelebA, ngf 128) in the paper; any even size works.
    The reference's ``image_size == 28`` switch only changes the padding of a layer it never uses,
    so no image size is needed here.
    """

    def __init__(self, sigmas: torch.Tensor, in_channels: int = 3, ngf: int = 128):
        super().__init__(sigmas, scale_by_sigma=False)  # NCSN v1 outputs the score itself
        self.body = RefineNetCascade(
            in_channels, ngf, len(self.sigmas), refine_norm=True, max_pool=False, stages=NCSN_STAGES
        )

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        index, _ = self.noise_level(level_index)  # level indices only (not sigma-continuous)
        assert index is not None  # noise_level refuses a sigma for a level-conditioned net
        return self.body(x, index)
