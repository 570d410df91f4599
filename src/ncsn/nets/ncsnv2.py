"""NCSNv2 score networks (Song & Ermon 2020): NCSNv2 and NCSNv2Deeper.

The NCSN RefineNet cascade with the changes of NCSNv2 (technique 3 and Appendix B.1):
* unconditional IN++ in the residual blocks; no normalization inside the RefineNet blocks;
* 5x5 max pooling (instead of average pooling) in chained residual pooling;
* no noise conditioning inside the network: the output is divided by sigma_i,
  s(x, i) = f(x) / sigma_i, so the number of levels L does not change the parameter count.

NCSNv2Deeper adds one more resolution stage (two downsamplings, then 4*ngf channels with dilation
2 and 4), as the reference (ermongroup/ncsnv2, models/ncsnv2.py) uses for 64-128 px LSUN images.
The reference uses plain NCSNv2 for CIFAR-10 (32 px) and CelebA (64 px).
"""

from __future__ import annotations

import torch

from .base import ScoreNet
from .refinenet import NCSN_STAGES, RefineNetCascade, StageSpec

# NCSNv2Deeper: res2 and res3 downsample, res4 (4 ngf) and res5 are dilated by 2 and 4.
DEEPER_STAGES: tuple[StageSpec, ...] = ((1, False, 1), (2, True, 1), (2, True, 1), (4, False, 2), (4, False, 4))


class _SigmaScaledRefineNet(ScoreNet):
    """The unconditional cascade ``f(x)``; ``forward`` returns f(x) / sigma, at the training
    levels or at any sigma (``continuous``: ``net(x, sigma)`` with a floating tensor)."""

    continuous = True

    def __init__(self, sigmas: torch.Tensor, in_channels: int, ngf: int, stages: tuple[StageSpec, ...]):
        super().__init__(sigmas, scale_by_sigma=True)
        self.body = RefineNetCascade(in_channels, ngf, None, refine_norm=False, max_pool=True, stages=stages)

    def unscaled(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the network output before the division by sigma (independent of the level)."""
        # The unconditional layers ignore the level index; pass a dummy one.
        return self.body(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        _, sigma = self.noise_level(level_index)
        return self.scale(self.unscaled(x), sigma)


class NCSNv2(_SigmaScaledRefineNet):
    """NCSNv2 network for 28-64 px images (reference: CIFAR-10 32 px and CelebA 64 px, ngf 128)."""

    def __init__(self, sigmas: torch.Tensor, in_channels: int = 3, ngf: int = 128):
        super().__init__(sigmas, in_channels, ngf, NCSN_STAGES)


class NCSNv2Deeper(_SigmaScaledRefineNet):
    """NCSNv2 with one more resolution stage (reference: LSUN 64-128 px, ngf 128)."""

    def __init__(self, sigmas: torch.Tensor, in_channels: int = 3, ngf: int = 128):
        super().__init__(sigmas, in_channels, ngf, DEEPER_STAGES)
