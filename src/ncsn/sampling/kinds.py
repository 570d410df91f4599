"""Sampler kinds as a registry: a new kind is one function here (or anywhere, registered with
``@register``) plus one ``conf/sampler/<kind>.yaml``.

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
    hooks: bool
    default_rho: float | None = None


KINDS: dict[str, Kind] = {}


def register(name: str, init: str, uses_grid: bool, hooks: bool = False, default_rho: float | None = None):
    def deco(fn):
        KINDS[name] = Kind(fn, init, uses_grid, hooks, default_rho)
        return fn

    return deco


@register("annealed", init="uniform", uses_grid=False, hooks=True)
def _annealed(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    """NCSN Algorithm 1: ``n_steps_each`` steps per training level, alpha_i = step_lr (sigma_i / sigma_L)^2."""
    return annealed_langevin(
        score, x, sigmas, sampler.step_lr, sampler.n_steps_each, denoise, None, keep_frames, progress, noise, hooks
    )


@register("langevin", init="uniform", uses_grid=False)
def _langevin(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    """Plain Langevin at sigma_L, ``n_steps_each * L`` steps of size step_lr (NCSN Eq. (4))."""
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
    )


@register("cas", init="gaussian", uses_grid=True)
def _cas(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    return consistent_annealed(score, x, grid, sampler.step_lr, noise, denoise, keep_frames, progress)


@register("pc", init="gaussian", uses_grid=True)
def _pc(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    return predictor_corrector(score, x, grid, sampler.snr, sampler.n_corrector, noise, denoise, keep_frames, progress)


@register("ode", init="gaussian", uses_grid=True, default_rho=7.0)
def _ode(sampler, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks=None):
    return probability_flow(score, x, grid, denoise, keep_frames, progress)
