"""Langevin samplers: pure functions of a score function ``score(x, level_index)``.

Nothing here knows about Lightning or Hydra. The score function and the random generator are
arguments, so a run is reproducible per seed and can be tested with an exact score.

Noise levels follow ``ncsn.sigmas``: index 0 = largest sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from .checks import is_int, is_number
from .speed import maybe_compile, score_autocast

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
    noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LangevinResult:
    """Annealed Langevin dynamics, NCSN Algorithm 1 (reference code's convention).

    For each level i (largest sigma first), alpha_i = step_lr * (sigma_i / sigma_L)^2 and
    ``n_steps_each`` times: x <- x + alpha_i * s(x, i) + sqrt(2 alpha_i) * z,  z ~ N(0, I).
    With ``denoise`` (NCSNv2, Sec. 4 / Appendix: "denoising" trick, Tweedie's formula) a final
    step x <- x + sigma_L^2 * s(x, L-1) without noise is applied.
    ``x`` is the initial state (the caller chooses its distribution); it is not modified.
    ``noise(x)``, if given, returns each step's z instead of N(0, I) drawn from ``generator``
    (NCSNv2 interpolation slerps the noise of two seeds).
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
            if noise is None:
                z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            else:
                z = noise(x)
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


SAMPLER_KINDS = ("annealed", "langevin")


class Sampler:
    """The configured sampler (config group ``sampler``): which loop, its step sizes, how many
    samples, and the initial distribution U(init_low, init_high) (the reference code starts
    image samplers from U[0, 1]).

    ``kind='langevin'`` is plain Langevin at the smallest sigma with step size ``step_lr`` and
    ``n_steps_each * L`` steps: as many network evaluations as the annealed sampler.
    """

    def __init__(
        self,
        kind: str = "annealed",
        step_lr: float = 2e-5,
        n_steps_each: int = 100,
        denoise: bool = False,
        n_samples: int = 64,
        batch_size: int = 1000,
        init_low: float = 0.0,
        init_high: float = 1.0,
        autocast: str | None = None,
        compile: bool = False,
    ):
        checks = [
            (kind in SAMPLER_KINDS, "kind", kind, f"one of {SAMPLER_KINDS}"),
            (is_number(step_lr) and step_lr > 0, "step_lr", step_lr, "a number > 0"),
            (is_int(n_steps_each) and n_steps_each >= 1, "n_steps_each", n_steps_each, "an integer >= 1"),
            (isinstance(denoise, bool), "denoise", denoise, "true or false"),
            (is_int(n_samples) and n_samples >= 1, "n_samples", n_samples, "an integer >= 1"),
            (is_int(batch_size) and batch_size >= 1, "batch_size", batch_size, "an integer >= 1"),
            (
                is_number(init_low) and is_number(init_high) and init_low < init_high,
                "init_high",
                init_high,
                f"a number > sampler.init_low={init_low}",
            ),
            (autocast in (None, "fp32", "bf16", "fp16"), "autocast", autocast, "null, fp32, bf16 or fp16"),
            (isinstance(compile, bool), "compile", compile, "true or false"),
        ]
        for ok, key, value, allowed in checks:
            if not ok:
                raise ValueError(f"sampler.{key}={value!r} is invalid: must be {allowed}")
        self.kind, self.step_lr, self.n_steps_each, self.denoise = kind, float(step_lr), n_steps_each, denoise
        self.n_samples, self.batch_size = n_samples, batch_size
        self.init_low, self.init_high = float(init_low), float(init_high)
        self.autocast, self.compile = autocast, compile
        self._compiled = None  # (score, torch.compile(score)): compile once, reuse every evaluation

    def wrap(self, score: ScoreFn) -> ScoreFn:
        """``score`` as this sampler evaluates it: compiled (``compile``), then under ``autocast``
        (bf16/fp16 network calls returning float32). Every sampling mode calls the network this way."""
        if self.compile:
            if self._compiled is None or self._compiled[0] is not score:
                self._compiled = (score, maybe_compile(score, True))
            score = self._compiled[1]
        return score_autocast(score, self.autocast)

    def __call__(
        self,
        score: ScoreFn,
        sigmas: torch.Tensor,
        shape: tuple,
        generator: torch.Generator,
        device=None,
        n: int | None = None,
        keep_frames: bool = False,
        progress: bool = True,
        denoise: bool | None = None,
    ) -> LangevinResult:
        """Draw ``n`` (default ``n_samples``) samples of per-sample ``shape``, in batches.
        ``denoise`` overrides the configured final denoising step (None: as configured); the
        result always holds the iterate before it too (``before_denoise``)."""
        n = self.n_samples if n is None else n
        denoise = self.denoise if denoise is None else denoise
        score = self.wrap(score)  # network calls compiled and/or in bf16/fp16; updates in fp32
        parts = []
        for start in range(0, n, self.batch_size):
            m = min(self.batch_size, n - start)
            u = torch.rand((m, *shape), generator=generator, device=device)
            x = self.init_low + (self.init_high - self.init_low) * u
            if self.kind == "annealed":
                parts.append(
                    annealed_langevin(
                        score, x, sigmas, self.step_lr, self.n_steps_each, denoise, generator, keep_frames, progress
                    )
                )
            else:
                parts.append(
                    langevin(
                        score,
                        x,
                        len(sigmas) - 1,
                        self.step_lr,
                        self.n_steps_each * len(sigmas),
                        generator,
                        keep_frames,
                        self.n_steps_each,
                        progress,
                    )
                )
        if not parts:
            empty = torch.empty((0, *shape), device=device)
            return LangevinResult(empty, empty, [])
        frames = [torch.cat(f) for f in zip(*(p.frames for p in parts))] if keep_frames else []
        return LangevinResult(
            torch.cat([p.samples for p in parts]), torch.cat([p.before_denoise for p in parts]), frames
        )
