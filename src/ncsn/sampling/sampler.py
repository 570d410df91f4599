"""``Sampler``: the configured sampler (config group ``sampler``) that every caller draws with:
a kind object (kinds.py: its own settings, run, NFE) and what every kind shares: how many samples
in which batches, the initial distribution, the seeds, the final denoising step, autocast/compile."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch

from ..core.checks import is_int, is_number
from ..core.speed import maybe_compile, score_autocast
from .grid import NoiseGrid
from .kinds import Kind, check
from .langevin import LangevinResult, LoopHooks, ScoreFn
from .seeds import GeneratorNoise, NoiseSource, SampleNoise

INITS = ("uniform", "gaussian")

#: ``hooks(indices, noise, x0)``: the loop hooks of one batch (inpainting), given its sample
#: indices, its noise source and its initial state.
HooksFn = Callable[[torch.Tensor, NoiseSource, torch.Tensor], LoopHooks]


class Sampler:
    """The configured sampler: ``kind`` (a ``kinds.Kind``: annealed, langevin, cas, pc, ode,
    euler) and the shared settings. ``init``: uniform (U(init_low, init_high), the reference
    code's image start) or gaussian (N(mean, sigma_max^2 I), mean = the training data's mean when
    ``init_mean='data'`` and the caller passes it, else the number ``init_mean``); null = the
    kind's. ``denoise``: the final denoising step; null = the kind's.
    """

    def __init__(
        self,
        kind: Kind,
        n_samples: int = 64,
        batch_size: int = 1000,
        init: str | None = None,
        init_low: float = 0.0,
        init_high: float = 1.0,
        init_mean: str | float = "data",
        denoise: bool | None = None,
        autocast: str | None = None,
        compile: bool = False,
    ):
        check(isinstance(kind, Kind), "_target_", kind, "a sampler kind (conf/sampler/<kind>.yaml)")
        check(is_int(n_samples) and n_samples >= 1, "n_samples", n_samples, "an integer >= 1")
        check(is_int(batch_size) and batch_size >= 1, "batch_size", batch_size, "an integer >= 1")
        check(init is None or init in INITS, "init", init, "null, uniform or gaussian")
        ok = is_number(init_low) and is_number(init_high) and init_low < init_high
        check(ok, "init_high", init_high, f"a number > sampler.init_low={init_low}")
        check(init_mean == "data" or is_number(init_mean), "init_mean", init_mean, "'data' or a number")
        check(denoise is None or isinstance(denoise, bool), "denoise", denoise, "null, true or false")
        check(autocast in (None, "fp32", "bf16", "fp16"), "autocast", autocast, "null, fp32, bf16 or fp16")
        check(isinstance(compile, bool), "compile", compile, "true or false")
        self.kind, self.n_samples, self.batch_size = kind, n_samples, batch_size
        self.init = init or kind.init
        self.init_low, self.init_high = float(init_low), float(init_high)
        self.init_mean = init_mean if init_mean == "data" else float(init_mean)
        self.denoise = kind.denoise if denoise is None else denoise
        self.autocast, self.compile = autocast, compile
        # (score, torch.compile(score)): compile once, reuse every evaluation
        self._compiled: tuple[ScoreFn, ScoreFn] | None = None

    @property
    def name(self) -> str:
        """The kind's name (``conf/sampler/<name>.yaml``)."""
        return self.kind.name

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
        """Whether ``draw`` centres its Gaussian initial state on the training data's mean."""
        return self.init == "gaussian" and self.init_mean == "data"

    def grid(self, sigmas: torch.Tensor, continuous: bool = False) -> NoiseGrid:
        """The sigmas the kind visits (ValueError for a grid the network cannot take)."""
        return self.kind.grid(sigmas, continuous)

    def initial_state(
        self, noise: NoiseSource, shape: tuple, sigma_max: float, data_mean: torch.Tensor | None = None
    ) -> torch.Tensor:
        """U(init_low, init_high) or N(mean, sigma_max^2 I), from the noise source's first draw."""
        if self.init == "uniform":
            return self.init_low + (self.init_high - self.init_low) * noise.uniform(shape)
        g = noise.normal(shape)
        mean: float | torch.Tensor
        if self.init_mean != "data":
            mean = cast(float, self.init_mean)  # a number once not "data" (__init__)
        elif data_mean is not None:
            mean = data_mean.to(device=g.device, dtype=g.dtype)
        else:  # no data at hand (plain Python use): the middle of the data range
            mean = 0.5 * (self.init_low + self.init_high)
        return mean + sigma_max * g

    def draw(
        self,
        score: ScoreFn,
        sigmas: torch.Tensor,
        shape: tuple,
        seed: int | torch.Generator | None = None,
        device=None,
        n: int | None = None,
        indices=None,
        noise: NoiseSource | None = None,
        hooks: HooksFn | None = None,
        keep_frames: bool = False,
        progress: bool = True,
        denoise: bool | None = None,
        data_mean: torch.Tensor | None = None,
    ) -> LangevinResult:
        """Draw samples of per-sample ``shape``: what every caller (training callback, final
        samples, each sample.py mode, interpolation, inpainting) runs.

        ``score``: the network (``score.continuous`` marks a sigma-continuous one) or any score
        function. The noise, one of:

        * ``seed`` an integer: the samples ``indices`` (default 0 .. n-1, n = ``n_samples``) of
          per-sample streams (``seeds.SampleNoise``): sample k depends only on (seed, k), not on
          ``batch_size`` nor on how samples are split over ranks. Drawn ``batch_size`` at a time.
        * ``seed`` a ``torch.Generator``: each batch from that one stream (the reference code's
          behaviour), kept only for the parity tests (tests/test_samplers.py, golden values).
        * ``noise``: a prepared source for all its ``noise.n`` rows (interpolation's slerped
          streams), in one batch.

        ``hooks(indices, noise, x0)`` gives each batch's loop hooks (inpainting; kinds with
        ``hooks`` only). ``denoise`` overrides the configured final denoising step (None: as
        configured); the result always holds the iterate before it too (``before_denoise``).
        ``data_mean``: the centre of a Gaussian start with ``init_mean='data'``."""
        if hooks is not None and not self.kind.hooks:
            raise ValueError(f"sampler kind {self.name} does not take loop hooks (inpainting)")
        continuous = bool(getattr(score, "continuous", False))
        denoise = self.denoise if denoise is None else denoise
        grid = self.grid(sigmas, continuous)  # validates before any work
        wrapped = self.wrap(score)  # network calls compiled and/or in bf16/fp16; updates in fp32
        if noise is not None:
            batches = [(torch.arange(noise.n), noise)]
        else:
            if indices is None:
                indices = torch.arange(self.n_samples if n is None else n)
            indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
            batches = [(idx, self._noise(seed, idx, device)) for idx in indices.split(self.batch_size)]
        parts = []
        for idx, source in batches:
            x = self.initial_state(source, tuple(shape), grid.sigmas[0], data_mean)
            h = hooks(idx, source, x) if hooks is not None else None
            parts.append(self.kind.run(wrapped, sigmas, grid, x, source, denoise, keep_frames, progress, h))
        if not parts:
            empty = torch.empty((0, *shape), device=device)
            return LangevinResult(empty, empty, [], 0)
        frames = [torch.cat(f) for f in zip(*(p.frames for p in parts))] if keep_frames else []
        return LangevinResult(
            torch.cat([p.samples for p in parts]), torch.cat([p.before_denoise for p in parts]), frames, parts[0].nfe
        )

    @staticmethod
    def _noise(seed, idx: torch.Tensor, device) -> NoiseSource:
        """A batch's noise: one generator's stream (parity tests only) or per-sample streams."""
        if isinstance(seed, torch.Generator):
            return GeneratorNoise(len(idx), seed, device)
        if seed is None:
            raise ValueError("Sampler.draw needs a seed or a noise source")
        return SampleNoise(int(seed), idx, device if device is not None else "cpu")


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
