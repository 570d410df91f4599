"""A noise-conditional MLP for 2-D toy data."""

from __future__ import annotations

import torch
from torch import nn


class ConditionalMLP(nn.Module):
    """s_theta(x, i) for low-dimensional x.

    Each hidden layer adds a learned embedding of the level index i before the softplus.
    With ``scale_by_sigma`` the output is divided by sigma_i (NCSNv2, Technique 3), so the
    network predicts sigma_i * score, which is O(1) at every level.
    """

    def __init__(
        self, sigmas: torch.Tensor, dim: int = 2, hidden: int = 128, num_layers: int = 3, scale_by_sigma: bool = True
    ):
        super().__init__()
        if num_layers < 1 or hidden < 1:
            raise ValueError(f"model.num_layers={num_layers} and model.hidden={hidden} must be >= 1")
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float32).clone())
        self.scale_by_sigma = scale_by_sigma
        num_scales = len(self.sigmas)
        widths = [dim] + [hidden] * num_layers
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.embeds = nn.ModuleList(nn.Embedding(num_scales, hidden) for _ in range(num_layers))
        for e in self.embeds:
            nn.init.zeros_(e.weight)
        self.out = nn.Linear(hidden, dim)
        self.act = nn.Softplus()

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        h = x
        for lin, emb in zip(self.linears, self.embeds):
            h = self.act(lin(h) + emb(level_index))
        out = self.out(h)
        if self.scale_by_sigma:
            out = out / self.sigmas[level_index].to(out.dtype).view(-1, 1)
        return out
