"""Interpolation between samples by slerping their injected noise (NCSNv2, Sec. 6 / Fig. 5-6).

A sample is a deterministic function of its noise draws: the initial state's (built from a
normal draw g: U(init_low, init_high) as init_low + (init_high - init_low) Phi(g), or
N(mean, sigma_max^2) as mean + sigma_max g) and every step's z. Two seeds give two noise
streams (``seeds.SampleNoise``); slerping both streams at every draw gives a row of samples that
moves from the sample of seed a to the sample of seed b, with any sampler kind (for the ODE only
the initial noise is slerped). The endpoints ARE the samples of the seeds alone: row n's ends are
sample n of ``sampler.draw(score, sigmas, shape, seed_a)`` and of ``seed_b``.
(ermongroup/ncsnv2 mixes the step noise as sin(theta) z_a + cos(theta) z_b, which is slerp for
orthogonal z_a, z_b, i.e. for independent high-dimensional noise; here the exact slerp is used
so that the endpoints are bit-for-bit the seeds' noise.)
"""

from __future__ import annotations

import torch

from .langevin import ScoreFn
from .sampler import Sampler
from .seeds import SampleNoise, SlerpNoise, slerp, uniform_from_gaussian

__all__ = ["SlerpNoise", "interpolate", "sample_from_seed", "slerp", "uniform_from_gaussian"]


def sample_from_seed(
    sampler: Sampler,
    score: ScoreFn,
    sigmas: torch.Tensor,
    shape,
    seed: int,
    device="cpu",
    progress=True,
    data_mean=None,
) -> torch.Tensor:
    """``shape[0]`` samples of per-sample shape ``shape[1:]`` driven by ``seed``'s noise: the
    endpoints of ``interpolate`` (equal to ``sampler.draw(score, sigmas, shape[1:], seed, n=shape[0])``)."""
    source = SampleNoise(seed, torch.arange(shape[0]), device)
    return sampler.draw(score, sigmas, shape[1:], noise=source, progress=progress, data_mean=data_mean).samples


def interpolate(
    sampler: Sampler,
    score: ScoreFn,
    sigmas: torch.Tensor,
    shape,
    seed_a: int,
    seed_b: int,
    n_interp: int,
    device="cpu",
    progress: bool = True,
    data_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """NCSNv2 interpolation with ``sampler`` (any kind): the initial state's noise and every
    draw slerped between the streams of ``seed_a`` and ``seed_b`` at t = k / (n_interp - 1).

    ``shape`` = (n_rows, *sample_shape): one row per pair. Returns (n_rows, n_interp,
    *sample_shape); [:, 0] equals ``sample_from_seed(..., seed_a)`` and [:, -1] the one of
    ``seed_b`` (exactly, for a score function whose output per sample does not depend on the
    rest of the batch). ``figures.save_interpolation_grid(out, path, seed_a, seed_b)`` shows the rows.
    """
    if n_interp < 2:
        raise ValueError(f"n_interp={n_interp} must be >= 2 (both endpoints)")
    t = torch.arange(n_interp, dtype=torch.float64) / (n_interp - 1)
    rows = torch.arange(shape[0])
    source = SlerpNoise(SampleNoise(seed_a, rows, device), SampleNoise(seed_b, rows, device), t)
    out = sampler.draw(score, sigmas, shape[1:], noise=source, progress=progress, data_mean=data_mean).samples
    return out.reshape(shape[0], n_interp, *shape[1:])
