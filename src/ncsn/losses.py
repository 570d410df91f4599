"""Denoising score matching (DSM) over many noise levels.

NCSN (Song & Ermon 2019), Eq. (5)-(6): for each example draw a level index i uniformly,
perturb x~ = x + sigma_i z with z ~ N(0, I), and regress the score network onto the score of
the perturbation kernel, grad log q(x~ | x) = -(x~ - x) / sigma_i^2 = -z / sigma_i.
Weighting lambda(sigma) = sigma^anneal_power (2 in the papers). As in the reference code
(ermongroup/ncsn ``anneal_dsm_score_estimation``) the per-example loss is

    l_n = 1/2 * sum_dims (s_theta(x~, i) + z / sigma_i)^2 * sigma_i^anneal_power

and the returned loss is the batch mean of l_n.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DSMOutput(NamedTuple):
    loss: torch.Tensor  # scalar: mean over the batch of per_example
    per_example: torch.Tensor  # (N,) weighted per-example loss l_n
    level_index: torch.Tensor  # (N,) long: the level drawn for each example


def dsm_loss(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    anneal_power: float = 2.0,
    generator: torch.Generator | None = None,
    level_index: torch.Tensor | None = None,
) -> DSMOutput:
    """Annealed DSM loss of NCSN Eq. (6) for one batch ``x`` (N, ...).

    ``sigmas`` are the noise levels (index 0 = largest); ``level_index`` may fix the level of
    each example (validation per level), otherwise it is drawn uniformly with ``generator``.
    """
    n = x.shape[0]
    if level_index is None:
        level_index = torch.randint(0, len(sigmas), (n,), device=x.device, generator=generator)
    sigma = sigmas.to(device=x.device, dtype=x.dtype)[level_index].view(n, *([1] * (x.dim() - 1)))
    z = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    perturbed = x + sigma * z
    score = score_fn(perturbed, level_index)
    per_example = 0.5 * ((score + z / sigma) ** 2).flatten(1).sum(1) * sigma.flatten() ** anneal_power
    return DSMOutput(per_example.mean(), per_example, level_index)


def per_level_mean(per_example: torch.Tensor, level_index: torch.Tensor, num_scales: int):
    """Sum and count of ``per_example`` for each level: two (L,) tensors, for logging."""
    sums = torch.zeros(num_scales, device=per_example.device, dtype=per_example.dtype)
    counts = torch.zeros(num_scales, device=per_example.device, dtype=per_example.dtype)
    sums.index_add_(0, level_index, per_example.detach())
    counts.index_add_(0, level_index, torch.ones_like(per_example))
    return sums, counts
