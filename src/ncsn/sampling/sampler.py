"""``Sampler``: the configured sampler (config group ``sampler``) that every caller uses: which
kind, its settings, how many samples in which batches, the initial distribution, the seeds."""

from __future__ import annotations

import torch

from ..core.checks import is_int, is_number
from ..core.speed import maybe_compile, score_autocast
from .grid import NoiseGrid, noise_grid
from .kinds import KINDS
from .langevin import LangevinResult, LoopHooks, ScoreFn
from .seeds import GeneratorNoise, NoiseSource, SampleNoise

INITS = ("uniform", "gaussian")


class Sampler:
    """The configured sampler.

    ``kind``: one of ``KINDS`` (annealed Langevin, plain Langevin, cas, pc, ode). ``step_lr``,
    ``n_steps_each``: annealed/plain Langevin (and CAS's eta = step_lr / sigma_L^2).
    ``num_steps``/``rho``: the sigma grid of cas/pc/ode (``grid.noise_grid``; Karras' rho, or
    null: geometric; conf/sampler/ode.yaml sets 7, EDM's). ``snr``/``n_corrector``: pc.
    ``init``: uniform (U(init_low, init_high), the reference code's image start) or gaussian
    (N(mean, sigma_max^2 I), mean = the training data's mean when ``init_mean='data'`` and the
    caller passes it, else the number ``init_mean``); null = the kind's default.

    Seeds: called with an integer ``seed``, sample k (of ``indices``, default 0..n-1) depends only
    on (seed, k): not on ``batch_size`` nor on how samples are split over ranks
    (``seeds.SampleNoise``). Called with a ``torch.Generator``, each batch draws from that one
    stream (the reference code's behaviour; kept for parity tests).
    """

    def __init__(
        self,
        kind: str = "annealed",
        step_lr: float = 2e-5,
        n_steps_each: int = 100,
        denoise: bool = False,
        n_samples: int = 64,
        batch_size: int = 1000,
        init: str | None = None,
        init_low: float = 0.0,
        init_high: float = 1.0,
        init_mean: str | float = "data",
        num_steps: int | None = None,
        rho: float | None = None,
        snr: float = 0.16,
        n_corrector: int = 1,
        autocast: str | None = None,
        compile: bool = False,
    ):
        checks = [
            (kind in KINDS, "kind", kind, f"one of {tuple(KINDS)}"),
            (is_number(step_lr) and step_lr > 0, "step_lr", step_lr, "a number > 0"),
            (is_int(n_steps_each) and n_steps_each >= 1, "n_steps_each", n_steps_each, "an integer >= 1"),
            (isinstance(denoise, bool), "denoise", denoise, "true or false"),
            (is_int(n_samples) and n_samples >= 1, "n_samples", n_samples, "an integer >= 1"),
            (is_int(batch_size) and batch_size >= 1, "batch_size", batch_size, "an integer >= 1"),
            (init is None or init in INITS, "init", init, "null, uniform or gaussian"),
            (
                is_number(init_low) and is_number(init_high) and init_low < init_high,
                "init_high",
                init_high,
                f"a number > sampler.init_low={init_low}",
            ),
            (init_mean == "data" or is_number(init_mean), "init_mean", init_mean, "'data' or a number"),
            (num_steps is None or (is_int(num_steps) and num_steps >= 2), "num_steps", num_steps, "null or >= 2"),
            (rho is None or (is_number(rho) and rho > 0), "rho", rho, "null or a number > 0"),
            (is_number(snr) and snr > 0, "snr", snr, "a number > 0"),
            (is_int(n_corrector) and n_corrector >= 0, "n_corrector", n_corrector, "an integer >= 0"),
            (autocast in (None, "fp32", "bf16", "fp16"), "autocast", autocast, "null, fp32, bf16 or fp16"),
            (isinstance(compile, bool), "compile", compile, "true or false"),
        ]
        for ok, key, value, allowed in checks:
            if not ok:
                raise ValueError(f"sampler.{key}={value!r} is invalid: must be {allowed}")
        if num_steps is not None and not KINDS[kind].uses_grid:
            raise ValueError(
                f"sampler.num_steps={num_steps} is invalid for kind={kind}: must be null "
                f"({kind} runs n_steps_each steps on each training level; num_steps is for "
                f"{', '.join(k for k, v in KINDS.items() if v.uses_grid)})"
            )
        self.kind, self.step_lr, self.n_steps_each, self.denoise = kind, float(step_lr), n_steps_each, denoise
        self.n_samples, self.batch_size = n_samples, batch_size
        self.init = init or KINDS[kind].init
        self.init_low, self.init_high = float(init_low), float(init_high)
        self.init_mean = init_mean if init_mean == "data" else float(init_mean)
        self.num_steps = num_steps
        self.rho = float(rho) if rho is not None else None
        self.snr, self.n_corrector = float(snr), n_corrector
        self.autocast, self.compile = autocast, compile
        self._compiled = None  # (score, torch.compile(score)): compile once, reuse every evaluation

    # -- pieces every mode shares -------------------------------------------------------
    def wrap(self, score: ScoreFn) -> ScoreFn:
        """``score`` as this sampler evaluates it: compiled (``compile``), then under ``autocast``
        (bf16/fp16 network calls returning float32). Every sampling mode calls the network this way."""
        if self.compile:
            if self._compiled is None or self._compiled[0] is not score:
                self._compiled = (score, maybe_compile(score, True))
            score = self._compiled[1]
        return score_autocast(score, self.autocast)

    @property
    def wants_data_mean(self) -> bool:
        """Whether ``initial_state`` centres its Gaussian on the training data's mean."""
        return self.init == "gaussian" and self.init_mean == "data"

    def grid(self, sigmas: torch.Tensor, continuous: bool = False) -> NoiseGrid:
        """The sigmas this sampler visits (ValueError for a grid the network cannot take)."""
        if not KINDS[self.kind].uses_grid:
            return noise_grid(sigmas, None, None, continuous)
        return noise_grid(sigmas, self.num_steps, self.rho, continuous)

    def nfe(self, sigmas: torch.Tensor, continuous: bool = False, denoise: bool | None = None) -> int:
        """Network evaluations per sample."""
        denoise = self.denoise if denoise is None else denoise
        n = len(self.grid(sigmas, continuous))
        return {
            "annealed": n * self.n_steps_each + int(denoise),
            "langevin": n * self.n_steps_each + int(denoise),
            "cas": n,
            "pc": n * (1 + self.n_corrector),
            "ode": 2 * (n - 1) + int(denoise),
        }.get(self.kind, -1)

    def initial_state(
        self, noise: NoiseSource, shape: tuple, sigma_max: float, data_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The initial state of every mode: U(init_low, init_high) or N(mean, sigma_max^2 I),
        from the noise source's first draw."""
        if self.init == "uniform":
            return self.init_low + (self.init_high - self.init_low) * noise.uniform(shape)
        g = noise.normal(shape)
        if self.init_mean != "data":
            mean = self.init_mean
        elif data_mean is not None:
            mean = data_mean.to(device=g.device, dtype=g.dtype)
        else:  # no data at hand (plain Python use): the middle of the data range
            mean = 0.5 * (self.init_low + self.init_high)
        return mean + sigma_max * g

    def run(
        self,
        score: ScoreFn,
        sigmas: torch.Tensor,
        x: torch.Tensor,
        noise: NoiseSource,
        continuous: bool = False,
        denoise: bool | None = None,
        keep_frames: bool = False,
        progress: bool = True,
        hooks: LoopHooks | None = None,
    ) -> LangevinResult:
        """Run this kind from the state ``x`` with the (already wrapped) ``score``."""
        denoise = self.denoise if denoise is None else denoise
        kind = KINDS[self.kind]
        if hooks is not None and not kind.hooks:
            raise ValueError(f"sampler.kind={self.kind} does not take loop hooks (inpainting)")
        grid = self.grid(sigmas, continuous)
        return kind.run(self, score, sigmas, grid, x, noise, denoise, keep_frames, progress, hooks)

    def __call__(
        self,
        score: ScoreFn,
        sigmas: torch.Tensor,
        shape: tuple,
        seed: int | torch.Generator,
        device=None,
        n: int | None = None,
        keep_frames: bool = False,
        progress: bool = True,
        denoise: bool | None = None,
        indices=None,
        data_mean: torch.Tensor | None = None,
    ) -> LangevinResult:
        """Draw ``n`` (default ``n_samples``) samples of per-sample ``shape`` in batches of
        ``batch_size``: the samples ``indices`` (default 0..n-1) of ``seed``. ``denoise``
        overrides the configured final denoising step (None: as configured); the result always
        holds the iterate before it too (``before_denoise``). ``score`` is the network
        (``score.continuous`` marks a sigma-continuous one) or any score function."""
        continuous = bool(getattr(score, "continuous", False))
        denoise = self.denoise if denoise is None else denoise
        if indices is None:
            indices = torch.arange(self.n_samples if n is None else n)
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        grid = self.grid(sigmas, continuous)  # validates before any work
        score = self.wrap(score)  # network calls compiled and/or in bf16/fp16; updates in fp32
        parts = []
        for start in range(0, len(indices), self.batch_size):
            idx = indices[start : start + self.batch_size]
            if isinstance(seed, torch.Generator):
                noise = GeneratorNoise(len(idx), seed, device)
            else:
                noise = SampleNoise(int(seed), idx, device if device is not None else "cpu")
            x = self.initial_state(noise, tuple(shape), grid.sigmas[0], data_mean)
            parts.append(self.run(score, sigmas, x, noise, continuous, denoise, keep_frames, progress))
        if not parts:
            empty = torch.empty((0, *shape), device=device)
            return LangevinResult(empty, empty, [], 0)
        frames = [torch.cat(f) for f in zip(*(p.frames for p in parts))] if keep_frames else []
        return LangevinResult(
            torch.cat([p.samples for p in parts]), torch.cat([p.before_denoise for p in parts]), frames, parts[0].nfe
        )


def dataset_mean(dataset, limit: int = 10_000, batch_size: int = 500) -> torch.Tensor:
    """The per-element mean of the first ``limit`` examples of a dataset of ``(x, ...)`` tuples:
    the centre of the Gaussian initial state (``init_mean='data'``)."""
    total, count = None, 0
    for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x = (batch[0] if isinstance(batch, (tuple, list)) else batch)[: limit - count].double()
        total = x.sum(0) if total is None else total + x.sum(0)
        count += len(x)
        if count >= limit:
            break
    if total is None:
        raise ValueError("dataset_mean: the dataset is empty")
    return (total / count).float()
