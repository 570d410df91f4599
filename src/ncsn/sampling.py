"""Langevin samplers: pure functions of a score function ``score(x, level_index)``.

Nothing here knows about Lightning or Hydra. The score function and the random generator are
arguments, so a run is reproducible per seed and can be tested with an exact score.

Noise levels follow ``ncsn.sigmas``: index 0 = largest sigma.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from tqdm.auto import tqdm

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LangevinResult(NamedTuple):
    samples: torch.Tensor  # final samples: after the denoising step when denoise=True
    before_denoise: torch.Tensor  # the last Langevin iterate (equals ``samples`` without denoise)
    frames: list  # with keep_frames: the iterate after each noise level (on the CPU), else []


def _levels(n: int, i: int, device) -> torch.Tensor:
    return torch.full((n,), i, dtype=torch.long, device=device)


def _progress(total: int, desc: str, progress: bool):
    # delay: the bar only appears when sampling takes more than a few seconds.
    return tqdm(total=total, desc=desc, delay=3.0, disable=not progress, leave=False, dynamic_ncols=True)


@torch.no_grad()
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
) -> LangevinResult:
    """Annealed Langevin dynamics, NCSN Algorithm 1 (reference code's convention).

    For each level i (largest sigma first), alpha_i = step_lr * (sigma_i / sigma_L)^2 and
    ``n_steps_each`` times: x <- x + alpha_i * s(x, i) + sqrt(2 alpha_i) * z,  z ~ N(0, I).
    With ``denoise`` (NCSNv2, Sec. 4 / Appendix: "denoising" trick, Tweedie's formula) a final
    step x <- x + sigma_L^2 * s(x, L-1) without noise is applied.
    ``x`` is the initial state (the caller chooses its distribution); it is not modified.
    """
    n = x.shape[0]
    sig = [float(s) for s in sigmas]
    frames = []
    bar = _progress(len(sig) * n_steps_each, "annealed Langevin", progress)
    for i, sigma in enumerate(sig):
        labels = _levels(n, i, x.device)
        alpha = step_lr * (sigma / sig[-1]) ** 2
        noise_scale = math.sqrt(2.0 * alpha)
        for _ in range(n_steps_each):
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + alpha * score(x, labels) + noise_scale * z
        bar.update(n_steps_each)
        if keep_frames:
            frames.append(x.detach().cpu())
    bar.close()
    before = x
    if denoise:
        x = x + sig[-1] ** 2 * score(x, _levels(n, len(sig) - 1, x.device))
    return LangevinResult(x, before, frames)


@torch.no_grad()
def langevin(
    score: ScoreFn,
    x: torch.Tensor,
    level: int,
    step_size: float,
    n_steps: int,
    generator: torch.Generator | None = None,
    keep_frames: bool = False,
    frame_every: int = 100,
    progress: bool = True,
) -> LangevinResult:
    """Plain Langevin dynamics at one noise level (NCSN Eq. (4), the non-annealed baseline).

    x <- x + eps * s(x, level) + sqrt(2 eps) * z, ``n_steps`` times, with eps = ``step_size``.
    """
    n = x.shape[0]
    labels = _levels(n, level, x.device)
    noise_scale = math.sqrt(2.0 * step_size)
    frames = []
    bar = _progress(n_steps, "Langevin", progress)
    for t in range(n_steps):
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + step_size * score(x, labels) + noise_scale * z
        bar.update(1)
        if keep_frames and (t + 1) % frame_every == 0:
            frames.append(x.detach().cpu())
    bar.close()
    return LangevinResult(x, x, frames)
