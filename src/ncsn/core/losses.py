"""Denoising score matching (DSM) over many noise levels.

NCSN (Song & Ermon 2019), Eq. (5)-(6): for each example draw a level index i uniformly,
perturb x~ = x + sigma_i z with z ~ N(0, I), and regress the score network onto the score of
the perturbation kernel, grad log q(x~ | x) = -(x~ - x) / sigma_i^2 = -z / sigma_i.
Weighting lambda(sigma) = sigma^anneal_power (2 in the papers). As in the reference code
(ermongroup/ncsn ``anneal_dsm_score_estimation``) the per-example loss is

    l_n = 1/2 * sum_dims (s_theta(x~, i) + z / sigma_i)^2 * sigma_i^anneal_power

and the returned loss is the batch mean of l_n.

With ``continuous=True`` (for sigma-continuous networks, ``net.continuous``) each example's
sigma is drawn log-uniformly in [sigma_L, sigma_1] instead of from the L levels, and the network
is called with the sigma values (a floating tensor) instead of level indices; the reported
``level_index`` is then the training level nearest in log sigma (for per-level logging).
With ``lognormal=(p_mean, p_std)`` as well, ln sigma is drawn from N(p_mean, p_std^2) (EDM's
training distribution, Karras et al. 2022: p_mean = -1.2, p_std = 1.2) truncated to
[ln sigma_L, ln sigma_1] (by the inverse CDF: exact, no rejection loop), the range the samplers
use and the networks' sigma features are laid out on.

``sigma_data``: EDM's loss weight instead of sigma^anneal_power, lambda(sigma) =
sigma^2 (1 + sigma^2 / sigma_data^2), i.e. 1 / c_out^2 on the denoiser (``ncsn.nets.precond``
derives the equivalence).

``dsm_loss`` is the formula (one perturb / score / weight body for both ways of drawing sigma);
``DSMLoss`` holds a run's settings (the ``loss`` config node) and checks them once, in its constructor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .checks import is_int, is_number

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class DSMOutput(NamedTuple):
    loss: torch.Tensor  # scalar: mean over the batch of per_example
    per_example: torch.Tensor  # (N,) weighted per-example loss l_n
    level_index: torch.Tensor  # (N,) long: the level drawn for each example (continuous: the nearest)
    sigma: torch.Tensor | None = None  # (N,): each example's sigma


SIGMA_SAMPLING = ("levels", "continuous", "lognormal")
WEIGHTINGS = ("power", "edm")


class DSMLoss:
    """The training objective (``loss.*``, conf/loss/dsm.yaml): ``dsm_loss`` with these settings.

    ``sigma_sampling``: levels (uniform over the L levels, the papers) | continuous (log-uniform in
    [sigma_L, sigma_1]) | lognormal (ln sigma ~ N(lognormal_mean, lognormal_std^2), truncated);
    ``weighting``: power (sigma^anneal_power) | edm (needs a network with ``sigma_data``);
    ``val_levels_per_image``: levels each held-out image is evaluated at (``LevelLoss``). Each value
    is checked here (a one-line ValueError naming ``loss.<key>``); ``check_net`` checks the network.
    """

    def __init__(
        self,
        anneal_power: float = 2.0,
        sigma_sampling: str = "levels",
        lognormal_mean: float = -1.2,
        lognormal_std: float = 1.2,
        weighting: str = "power",
        val_levels_per_image: int | None = None,
    ):
        _need("anneal_power", anneal_power, is_number(anneal_power), "a finite number (2 in the papers)")
        _need("sigma_sampling", sigma_sampling, sigma_sampling in SIGMA_SAMPLING, "levels, continuous or lognormal")
        _need("lognormal_mean", lognormal_mean, is_number(lognormal_mean), "a finite number (EDM: -1.2)")
        _need("lognormal_std", lognormal_std, is_number(lognormal_std) and lognormal_std > 0, "a number > 0 (EDM: 1.2)")
        _need("weighting", weighting, weighting in WEIGHTINGS, "power or edm")
        LevelLoss.check(val_levels_per_image)
        self.anneal_power, self.sigma_sampling, self.weighting = anneal_power, sigma_sampling, weighting
        self.lognormal_mean, self.lognormal_std = lognormal_mean, lognormal_std
        self.val_levels_per_image = val_levels_per_image

    def check_net(self, net) -> None:
        """Refuse a network this loss cannot train (ValueError naming the key)."""
        if self.sigma_sampling != "levels" and not getattr(net, "continuous", False):
            raise ValueError(
                f"loss.sigma_sampling={self.sigma_sampling!r} is invalid for this model: it is conditioned on level "
                "indices (use model=ncsnv2, or model.conditioning=sigma or none for mlp / small_conv)"
            )
        if self.weighting == "edm" and getattr(net, "sigma_data", None) is None:
            raise ValueError("loss.weighting='edm' is invalid for this model: it needs model.precond=edm")

    def __call__(self, score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, sigma_data: float | None = None):
        """The training loss of one batch (``sigma_data``: the network's, used by weighting=edm)."""
        lognormal = (self.lognormal_mean, self.lognormal_std) if self.sigma_sampling == "lognormal" else None
        return dsm_loss(
            score_fn,
            x,
            sigmas,
            self.anneal_power,
            continuous=self.sigma_sampling != "levels",
            lognormal=lognormal,
            sigma_data=sigma_data if self.weighting == "edm" else None,
        )

    def at_levels(self, score_fn: ScoreFn, x, sigmas, level_index, generator: torch.Generator) -> DSMOutput:
        """The validation loss at the given levels, weighted sigma^anneal_power whatever the training
        weighting (comparable across runs)."""
        return dsm_loss(score_fn, x, sigmas, self.anneal_power, generator=generator, level_index=level_index)


def _need(key: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"loss.{key}={value!r} is invalid: must be {allowed}")


def dsm_loss(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    anneal_power: float = 2.0,
    generator: torch.Generator | None = None,
    level_index: torch.Tensor | None = None,
    continuous: bool = False,
    lognormal: tuple[float, float] | None = None,
    sigma_data: float | None = None,
) -> DSMOutput:
    """Annealed DSM loss of NCSN Eq. (6) for one batch ``x`` (N, ...).

    ``sigmas`` are the noise levels (index 0 = largest); ``level_index`` may fix the level of
    each example (validation per level), otherwise it is drawn uniformly with ``generator``.
    ``continuous``: sigma log-uniform in [sigma_L, sigma_1] per example (see the module docstring;
    a given ``level_index`` still fixes the levels); with ``lognormal=(p_mean, p_std)`` ln sigma is
    a truncated normal instead. ``sigma_data``: EDM's weight (module docstring).
    """
    n = x.shape[0]
    if continuous and level_index is None:  # the network is called with the sigmas themselves
        log_sig = torch.log(sigmas.to(device=x.device, dtype=torch.float64))
        u = torch.rand(n, device=x.device, generator=generator, dtype=torch.float64)
        if lognormal is None:
            log_s = log_sig[-1] + u * (log_sig[0] - log_sig[-1])
        else:
            log_s = truncated_normal(u, lognormal[0], lognormal[1], float(log_sig[-1]), float(log_sig[0]))
        level_index = (log_s[:, None] - log_sig[None]).abs().argmin(dim=1)
        sigma = torch.exp(log_s).to(x.dtype)
        condition = sigma
    else:  # the network is called with the level indices
        if level_index is None:
            level_index = torch.randint(0, len(sigmas), (n,), device=x.device, generator=generator)
        sigma = sigmas.to(device=x.device, dtype=x.dtype)[level_index]
        condition = level_index
    sigma = sigma.view(n, *([1] * (x.dim() - 1)))
    z = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    score = score_fn(x + sigma * z, condition)
    weight = _weight(sigma.flatten(), anneal_power, sigma_data)
    per_example = 0.5 * ((score + z / sigma) ** 2).flatten(1).sum(1) * weight
    return DSMOutput(per_example.mean(), per_example, level_index, sigma.flatten())


def _weight(sigma: torch.Tensor, anneal_power: float, sigma_data: float | None) -> torch.Tensor:
    """lambda(sigma): sigma^anneal_power, or EDM's sigma^2 (1 + sigma^2 / sigma_data^2)."""
    if sigma_data is None:
        return sigma**anneal_power
    return sigma**2 * (1.0 + sigma**2 / sigma_data**2)


def truncated_normal(u: torch.Tensor, mean: float, std: float, low: float, high: float) -> torch.Tensor:
    """N(mean, std^2) restricted to [low, high], from uniforms ``u`` in [0, 1) by the inverse CDF
    (``std`` > 0: ``DSMLoss`` checks ``loss.lognormal_std``)."""
    cdf = [0.5 * math.erfc(-(b - mean) / (std * math.sqrt(2.0))) for b in (low, high)]
    p = (cdf[0] + u * (cdf[1] - cdf[0])).clamp(min=1e-300, max=1.0 - 1e-16)
    return (mean + std * torch.special.ndtri(p)).clamp(low, high)


def per_level_mean(per_example: torch.Tensor, level_index: torch.Tensor, num_scales: int):
    """Sum and count of ``per_example`` for each level: two (L,) tensors, for logging."""
    sums = torch.zeros(num_scales, device=per_example.device, dtype=per_example.dtype)
    counts = torch.zeros(num_scales, device=per_example.device, dtype=per_example.dtype)
    sums.index_add_(0, level_index, per_example.detach())
    counts.index_add_(0, level_index, torch.ones_like(per_example))
    return sums, counts


class LevelLoss:
    """Validation DSM loss per noise level, every level with the same number of images.

    Each held-out image is evaluated at ``levels_per_image`` (k) levels: the (image, level) pairs
    run through the levels in a fixed cycle 0, 1, ..., L-1, 0, 1, ..., so image p of the stream
    gets levels (p k + t) mod L, t < k. With k = L (the default) every image is evaluated at every
    level (L forward passes per image); with k < L it is a deterministic stratified assignment
    (k passes per image). Only complete cycles are counted, so every level has exactly the same
    count: for n images, floor(n k / L) per level (n with k = L); the last incomplete cycle (fewer
    than L pairs) is dropped. No randomness: the same images get the same levels at every
    validation. Plain torch; one instance per validation epoch (per process under DDP, where each
    rank sees the same number of images, so the counts stay equal after summing across ranks).
    """

    def __init__(self, num_scales: int, levels_per_image: int | None = None, device=None):
        if num_scales < 1:
            raise ValueError(f"num_scales={num_scales} must be >= 1")
        self.check(levels_per_image)
        k = num_scales if levels_per_image is None else min(levels_per_image, num_scales)
        self.num_scales, self.levels_per_image = num_scales, k
        self.sums = torch.zeros(num_scales, device=device, dtype=torch.float64)
        self.counts = torch.zeros(num_scales, device=device, dtype=torch.float64)
        self._pending = torch.zeros(num_scales, device=device, dtype=torch.float64)
        self._pending_n = torch.zeros(num_scales, device=device, dtype=torch.float64)
        self.pairs = 0  # (image, level) pairs seen so far

    def pairs_for(self, n_images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image index in the batch, level index) of the next ``n_images`` images' pairs, image-major."""
        k = self.levels_per_image
        image = torch.arange(n_images, device=self.sums.device).repeat_interleave(k)
        level = (self.pairs + torch.arange(n_images * k, device=self.sums.device)) % self.num_scales
        return image, level

    def add(self, per_example: torch.Tensor, level_index: torch.Tensor) -> None:
        """Add the losses of the pairs ``pairs_for`` returned (same order)."""
        n, length = len(per_example), self.num_scales
        complete = (self.pairs + n) // length * length  # pairs before this position form whole cycles
        if self.pairs < complete:  # the cycle in progress is completed by this batch
            self.sums += self._pending
            self.counts += self._pending_n
            self._pending.zero_()
            self._pending_n.zero_()
        done = (self.pairs + torch.arange(n, device=level_index.device)) < complete
        values = per_example.detach().to(torch.float64)
        for mask, sums, counts in ((done, self.sums, self.counts), (~done, self._pending, self._pending_n)):
            sums.index_add_(0, level_index[mask], values[mask])
            counts.index_add_(0, level_index[mask], torch.ones_like(values[mask]))
        self.pairs += n

    @staticmethod
    def check(levels_per_image) -> None:
        """``levels_per_image``: None (every level) or an integer >= 1 (``loss.val_levels_per_image``)."""
        if not (levels_per_image is None or (is_int(levels_per_image) and levels_per_image >= 1)):
            raise ValueError(
                f"loss.val_levels_per_image={levels_per_image!r} is invalid: must be null or an integer >= 1"
            )

    @staticmethod
    def cost(num_scales: int, num_images: int, levels_per_image: int | None = None) -> tuple[int, int]:
        """(forward passes per validation, images per level) for ``num_images`` held-out images."""
        k = num_scales if levels_per_image is None else min(levels_per_image, num_scales)
        return num_images * k, num_images * k // num_scales
