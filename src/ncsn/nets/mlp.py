"""A noise-conditional MLP for 2-D toy data."""

from __future__ import annotations

import torch
from torch import nn

from .base import ScoreNet, SigmaFeatures


class ConditionalMLP(ScoreNet):
    """s_theta(x, i) for low-dimensional x.

    Each hidden layer adds an embedding of the noise level before the softplus: a learned
    embedding per training level (``conditioning='level'``), or a learned linear map of Fourier
    features of log sigma (``'sigma'``: the network takes any sigma, ``continuous``).
    With ``scale_by_sigma`` the output is divided by sigma (NCSNv2, Technique 3), so the
    network predicts sigma * score, which is O(1) at every level.
    """

    def __init__(
        self,
        sigmas: torch.Tensor,
        dim: int = 2,
        hidden: int = 128,
        num_layers: int = 3,
        scale_by_sigma: bool = True,
        conditioning: str = "level",
    ):
        super().__init__(sigmas, scale_by_sigma)
        if num_layers < 1 or hidden < 1:
            raise ValueError(f"model.num_layers={num_layers} and model.hidden={hidden} must be >= 1")
        if conditioning not in ("level", "sigma"):
            raise ValueError(f"model.conditioning={conditioning!r} is invalid: must be 'level' or 'sigma'")
        self.conditioning = conditioning
        self.continuous = conditioning == "sigma"
        num_scales = len(self.sigmas)
        widths = [dim] + [hidden] * num_layers
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        if self.continuous:
            self.features = SigmaFeatures()
            linears = [nn.Linear(self.features.dim, hidden) for _ in range(num_layers)]
            for lin in linears:
                nn.init.zeros_(lin.bias)
            self.embeds = nn.ModuleList(linears)
        else:
            embeddings = [nn.Embedding(num_scales, hidden) for _ in range(num_layers)]
            for emb in embeddings:
                nn.init.zeros_(emb.weight)
            self.embeds = nn.ModuleList(embeddings)
        self.out = nn.Linear(hidden, dim)
        self.act = nn.Softplus()

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        level, sigma = self.noise_level(level_index)
        cond = self.features(sigma, self.sigmas).to(x.dtype) if self.continuous else level
        h = x
        for lin, emb in zip(self.linears, self.embeds):
            h = self.act(lin(h) + emb(cond))
        return self.scale(self.out(h), sigma)
