"""The annealed Langevin loop, written once (NCSN Algorithm 1, reference code's convention).

Plain Langevin, inpainting (NCSN Algorithm 2) and interpolation (NCSNv2) are this loop with
another schedule, hooks or noise source. Nothing here knows about Lightning or Hydra: the score
function ``score(x, level_index)`` and the noise are arguments, so a run is reproducible and
testable with an exact score. Noise levels follow ``ncsn.core.sigmas``: index 0 = largest sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .seeds import GeneratorNoise

#: ``score(x, cond)``: cond is a long tensor of level indices (N,), or, for sigma-continuous
#: networks (``net.continuous``), a floating tensor of noise levels sigma (N,).
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseFn = Callable[[torch.Tensor], torch.Tensor]


class LangevinResult(NamedTuple):
    samples: torch.Tensor  # final samples: after the denoising step when denoise=True
    before_denoise: torch.Tensor  # the iterate before the final denoising step (equals ``samples`` without)
    frames: list  # with keep_frames: the iterate after each noise level (on the CPU), else []
    nfe: int = 0  # network evaluations per sample


class LoopHooks:
    """Hooks of the Langevin loop (all no-ops here); inpainting overrides them.

    ``start_level(x, i, sigma)`` at the start of level i; ``before_step`` / ``after_step``
    around each update; ``output(x)`` maps the final iterate (and the one before denoising)."""

    def start_level(self, x: torch.Tensor, i: int, sigma: float) -> torch.Tensor:
        return x

    def before_step(self, x: torch.Tensor, i: int, sigma: float) -> torch.Tensor:
        return x

    def after_step(self, x: torch.Tensor, i: int, sigma: float) -> torch.Tensor:
        return x

    def output(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Stage(NamedTuple):
    """``n_steps`` Langevin steps x <- x + alpha s(x, level) + sqrt(2 alpha) z at one level."""

    level: int
    sigma: float
    alpha: float
    n_steps: int


def levels_tensor(n: int, i: int, device) -> torch.Tensor:
    return torch.full((n,), i, dtype=torch.long, device=device)


def progress_bar(total: int, desc: str, progress: bool):
    # delay: the bar only appears when sampling takes more than a few seconds.
    return tqdm(total=total, desc=desc, delay=3.0, disable=not progress, leave=False, dynamic_ncols=True)


def annealed_stages(sigmas: Sequence[float], step_lr: float, n_steps_each: int) -> list[Stage]:
    """NCSN Algorithm 1's schedule: alpha_i = step_lr * (sigma_i / sigma_L)^2, T steps per level."""
    sig = [float(s) for s in sigmas]
    return [Stage(i, s, step_lr * (s / sig[-1]) ** 2, n_steps_each) for i, s in enumerate(sig)]


@torch.no_grad()
def langevin_loop(
    score: ScoreFn,
    x: torch.Tensor,
    stages: Sequence[Stage],
    noise: NoiseFn,
    denoise_sigma: float | None = None,
    denoise_level: int | None = None,
    hooks: LoopHooks | None = None,
    keep_frames: bool = False,
    progress: bool = True,
    desc: str = "annealed Langevin",
) -> LangevinResult:
    """The Langevin loop: for each stage, ``n_steps`` times
    x <- after_step(x' + alpha s(x', level) + sqrt(2 alpha) z), x' = before_step(x), z = noise(x).
    A frame (``keep_frames``) is kept after each stage. With ``denoise_sigma`` a final step
    x <- x + sigma^2 s(x, denoise_level) without noise (Tweedie's formula) follows."""
    hooks = hooks or LoopHooks()
    n = x.shape[0]
    frames, nfe = [], 0
    bar = progress_bar(sum(s.n_steps for s in stages), desc, progress)
    for stage in stages:
        labels = levels_tensor(n, stage.level, x.device)
        alpha = stage.alpha
        noise_scale = math.sqrt(2.0 * alpha)
        x = hooks.start_level(x, stage.level, stage.sigma)
        for _ in range(stage.n_steps):
            x = hooks.before_step(x, stage.level, stage.sigma)
            z = noise(x)
            x = x + alpha * score(x, labels) + noise_scale * z
            x = hooks.after_step(x, stage.level, stage.sigma)
        nfe += stage.n_steps
        bar.update(stage.n_steps)
        if keep_frames:
            frames.append(x.detach().cpu())
    bar.close()
    before = x
    if denoise_sigma is not None:
        assert denoise_level is not None, "denoise_sigma comes with the level it is at (denoise_level)"
        x = x + denoise_sigma**2 * score(x, levels_tensor(n, denoise_level, x.device))
        nfe += 1
    return LangevinResult(hooks.output(x), hooks.output(before), frames, nfe)


def _noise_fn(noise, generator, x):
    return noise if noise is not None else GeneratorNoise(x.shape[0], generator)


def annealed_langevin(
    score: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    step_lr: float,
    n_steps_each: int,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    keep_frames: bool = False,
    progress: bool = True,
    noise: NoiseFn | None = None,
    hooks: LoopHooks | None = None,
) -> LangevinResult:
    """Annealed Langevin dynamics, NCSN Algorithm 1 (reference code's convention).

    For each level i (largest sigma first), alpha_i = step_lr * (sigma_i / sigma_L)^2 and
    ``n_steps_each`` times: x <- x + alpha_i * s(x, i) + sqrt(2 alpha_i) * z,  z ~ N(0, I).
    With ``denoise`` (NCSNv2, Sec. 4 / Appendix: "denoising" trick, Tweedie's formula) a final
    step x <- x + sigma_L^2 * s(x, L-1) without noise is applied.
    ``x`` is the initial state (the caller chooses its distribution); it is not modified.
    ``noise(x)``, if given, returns each step's z (a ``seeds`` source); otherwise z ~ N(0, I)
    from ``generator`` for the whole batch. ``hooks``: see ``LoopHooks``.
    """
    sig = [float(s) for s in sigmas]
    return langevin_loop(
        score,
        x,
        annealed_stages(sig, step_lr, n_steps_each),
        _noise_fn(noise, generator, x),
        denoise_sigma=sig[-1] if denoise else None,
        denoise_level=len(sig) - 1,
        hooks=hooks,
        keep_frames=keep_frames,
        progress=progress,
    )


def langevin(
    score: ScoreFn,
    x: torch.Tensor,
    level: int,
    step_lr: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    keep_frames: bool = False,
    frame_every: int = 100,
    progress: bool = True,
    noise: NoiseFn | None = None,
    denoise_sigma: float | None = None,
) -> LangevinResult:
    """Plain Langevin dynamics at one noise level (NCSN Eq. (4), the non-annealed baseline):
    x <- x + eps * s(x, level) + sqrt(2 eps) * z, ``n_steps`` times, eps = ``step_lr``.
    Frames (``keep_frames``) every ``frame_every`` steps. With ``denoise_sigma`` (the level's
    sigma) the final denoising step x <- x + sigma^2 s(x, level) follows, as in the annealed sampler."""
    chunks = [frame_every] * (n_steps // frame_every) + ([n_steps % frame_every] if n_steps % frame_every else [])
    stages = [Stage(level, float("nan"), step_lr, c) for c in chunks]  # no hooks: the stage needs no sigma
    res = langevin_loop(
        score,
        x,
        stages,
        _noise_fn(noise, generator, x),
        denoise_sigma=denoise_sigma,
        denoise_level=level,
        keep_frames=keep_frames,
        progress=progress,
        desc="Langevin",
    )
    frames = res.frames[: n_steps // frame_every] if keep_frames else []
    return res._replace(frames=frames)
