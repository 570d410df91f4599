"""The noise levels a sampler visits, and how it conditions the network on them.

A level-conditioned network (``net(x, level_index)`` with a learned embedding per training
level) can only be evaluated at its training levels; a sigma-continuous one (``net.continuous``:
NCSNv2's f(x) / sigma, or the small nets built with ``conditioning=sigma``) at any sigma, given as
a floating tensor in place of the level indices.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..core.sigmas import geometric_sigmas


class NoiseGrid(NamedTuple):
    sigmas: list  # the sigmas visited, largest first (floats)
    levels: list | None  # their training-level indices, or None: evaluate the network at the sigmas

    def cond(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """The network's second argument for grid point k and a batch like ``x``."""
        n = x.shape[0]
        if self.levels is not None:
            return torch.full((n,), self.levels[k], dtype=torch.long, device=x.device)
        return torch.full((n,), self.sigmas[k], dtype=x.dtype, device=x.device)

    def __len__(self) -> int:
        return len(self.sigmas)


def karras_sigmas(sigma_max: float, sigma_min: float, num_steps: int, rho: float) -> list:
    """Karras et al. 2022, Eq. (5): sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return [(a + i / (num_steps - 1) * (b - a)) ** rho for i in range(num_steps)]


def noise_grid(sigmas, num_steps: int | None, rho: float | None, continuous: bool) -> NoiseGrid:
    """The grid of ``num_steps`` sigmas from sigma_1 to sigma_L of the training ``sigmas``.

    ``num_steps=None``: the training levels themselves. Sigma-continuous networks: ``num_steps``
    sigmas spaced by Karras' ``rho`` (``rho=None``: geometrically, i.e. log-uniformly).
    Level-conditioned networks: ``num_steps`` <= L evenly spaced training levels (index 0 and L-1
    included; for geometric levels that is a geometric subset); more raises ValueError.
    """
    sig = [float(s) for s in sigmas]
    n_levels = len(sig)
    if num_steps is None:
        return NoiseGrid(sig, list(range(n_levels)))
    if num_steps < 2 or (num_steps > n_levels and not continuous) or n_levels < 2:
        raise ValueError(
            f"sampler.num_steps={num_steps} is invalid: must be "
            + (
                f"between 2 and {n_levels}: this network is conditioned on its {n_levels} training levels "
                "(a sigma-continuous network, e.g. model.conditioning=sigma or NCSNv2, can take more)"
                if not continuous
                else "an integer >= 2 (or null: the training levels)"
            )
        )
    if not continuous:
        levels = sorted({round(k * (n_levels - 1) / (num_steps - 1)) for k in range(num_steps)})
        return NoiseGrid([sig[i] for i in levels], levels)
    if rho is None:
        return NoiseGrid(geometric_sigmas(sig[0], sig[-1], num_steps), None)
    return NoiseGrid(karras_sigmas(sig[0], sig[-1], num_steps, rho), None)
