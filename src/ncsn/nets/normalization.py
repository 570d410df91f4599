"""Instance normalization "++" layers of NCSN (Appendix A.1) and NCSNv2.

Plain instance norm removes the per-channel spatial means, which can shift colours; the "++"
variant adds back the channel means, standardized across channels, with a learned weight alpha:

    out_k = gamma_k * ( IN(x)_k + alpha_k * mu~_k ) + beta_k,
    mu~_k = (mu_k - mean_c(mu_c)) / sqrt(var_c(mu_c) + eps)      (unbiased var, eps = 1e-5)

In the conditional version (NCSN v1) gamma, alpha, beta depend on the noise level index i and
are stored in one embedding of width 3F per layer (gamma and alpha ~ N(1, 0.02), beta = 0).
"""

from __future__ import annotations

import torch
from torch import nn


def _standardized_channel_means(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    means = x.mean(dim=(2, 3))  # (N, C)
    m = means.mean(dim=-1, keepdim=True)
    v = means.var(dim=-1, keepdim=True)  # unbiased, as the reference code
    return (means - m) / torch.sqrt(v + eps)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """CIN++: gamma[i], alpha[i], beta[i] indexed by the noise level (NCSN v1)."""

    def __init__(self, num_features: int, num_scales: int, bias: bool = True):
        super().__init__()
        self.num_features = num_features
        self.bias = bias
        self.instance_norm = nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
        width = 3 if bias else 2
        self.embed = nn.Embedding(num_scales, width * num_features)
        with torch.no_grad():
            self.embed.weight[:, : 2 * num_features].normal_(1.0, 0.02)
            self.embed.weight[:, 2 * num_features :].zero_()

    def forward(self, x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        mu = _standardized_channel_means(x)[..., None, None]
        h = self.instance_norm(x)
        params = self.embed(level_index)[..., None, None]  # (N, 3F, 1, 1)
        if self.bias:
            gamma, alpha, beta = params.chunk(3, dim=1)
            return gamma * (h + alpha * mu) + beta
        gamma, alpha = params.chunk(2, dim=1)
        return gamma * (h + alpha * mu)


class InstanceNorm2dPlus(nn.Module):
    """IN++ with per-channel gamma, alpha, beta shared across noise levels (NCSNv2)."""

    def __init__(self, num_features: int, bias: bool = True):
        super().__init__()
        self.num_features = num_features
        self.instance_norm = nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False)
        self.alpha = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.gamma = nn.Parameter(torch.empty(num_features).normal_(1.0, 0.02))
        self.beta = nn.Parameter(torch.zeros(num_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = _standardized_channel_means(x)[..., None, None]
        h = self.instance_norm(x)
        out = self.gamma.view(1, -1, 1, 1) * (h + self.alpha.view(1, -1, 1, 1) * mu)
        if self.beta is not None:
            out = out + self.beta.view(1, -1, 1, 1)
        return out
