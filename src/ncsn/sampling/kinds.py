"""Sampler kinds, one table: a new kind is one function here, one row of ``KINDS`` and one
``conf/sampler/<kind>.yaml``.

A kind's function takes ``(sampler, score, sigmas, grid, x, noise, denoise, keep_frames,
progress, hooks)`` and returns a ``LangevinResult`` (with its network evaluations, ``nfe``).
``init`` is the kind's default initial distribution (``Sampler.init=null``); ``uses_grid``
whether it runs on ``sampler.num_steps`` sigmas (else on the training levels); ``hooks`` whether
it takes ``LoopHooks`` (inpainting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .cas import consistent_annealed
from .langevin import annealed_langevin, langevin
from .ode import probability_flow
from .pc import predictor_corrector


class Kind(NamedTuple):
    run: Callable
    init: str  # "uniform" | "gaussian"
    uses_grid: bool
    hooks: bool = False


def _annealed(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    """NCSN Algorithm 1: ``n_steps_each`` steps per training level, alpha_i = step_lr (sigma_i / sigma_L)^2."""
    return annealed_langevin(
        score, x, sigmas, sampler.step_lr, sampler.n_steps_each, denoise, None, keep_frames, progress, noise, hooks
    )


def _langevin(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    """Plain Langevin at sigma_L, ``n_steps_each * L`` steps of size step_lr (NCSN Eq. (4)), then
    the denoising step at sigma_L when ``denoise``."""
    return langevin(
        score,
        x,
        len(sigmas) - 1,
        sampler.step_lr,
        sampler.n_steps_each * len(sigmas),
        None,
        keep_frames,
        sampler.n_steps_each,
        progress,
        noise,
        denoise_sigma=float(sigmas[-1]) if denoise else None,
    )


def _cas(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    return consistent_annealed(score, x, grid, sampler.step_lr, noise, denoise, keep_frames, progress)


def _pc(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    return predictor_corrector(score, x, grid, sampler.snr, sampler.n_corrector, noise, denoise, keep_frames, progress)


def _ode(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    return probability_flow(score, x, grid, denoise, keep_frames, progress)


KINDS: dict[str, Kind] = {
    "annealed": Kind(_annealed, init="uniform", uses_grid=False, hooks=True),
    "langevin": Kind(_langevin, init="uniform", uses_grid=False),
    "cas": Kind(_cas, init="gaussian", uses_grid=True),
    "pc": Kind(_pc, init="gaussian", uses_grid=True),
    "ode": Kind(_ode, init="gaussian", uses_grid=True),
}
