"""Sampler kinds as small objects: each holds and checks its own settings (the keys of its
``conf/sampler/<name>.yaml``, built there by ``_target_``), runs from an initial state and counts
its network evaluations. ``Sampler`` (sampler.py) holds one and does what every kind shares.

A new kind: a subclass of ``Kind`` (``name``, ``__init__`` checking its settings with ``check``,
``run``, ``nfe``, ``frame_labels``) and a ``conf/sampler/<name>.yaml`` (see euler.py: the whole of
one kind).
"""

from __future__ import annotations

from ..core.checks import is_int, is_number
from .cas import cas_betas, consistent_annealed
from .grid import NoiseGrid, noise_grid
from .langevin import LangevinResult, LoopHooks, ScoreFn, annealed_langevin, langevin
from .ode import probability_flow
from .pc import predictor_corrector
from .seeds import NoiseSource


def check(ok: bool, key: str, value, allowed: str) -> None:
    """The one-line refusal of a setting: ``sampler.<key>=<value> is invalid: must be <allowed>``."""
    if not ok:
        raise ValueError(f"sampler.{key}={value!r} is invalid: must be {allowed}")


def check_grid(num_steps, rho) -> None:
    """The settings of the kinds that run on ``grid.noise_grid``'s sigmas."""
    check(num_steps is None or (is_int(num_steps) and num_steps >= 2), "num_steps", num_steps, "null or >= 2")
    check(rho is None or (is_number(rho) and rho > 0), "rho", rho, "null or a number > 0")


class Kind:
    """Base of the sampler kinds. ``init``: the initial distribution when ``sampler.init`` is null
    (uniform: the reference code's image start; gaussian: N(mean, sigma_max^2 I)). ``denoise``: the
    final denoising step when ``sampler.denoise`` is null. ``hooks``: whether ``run`` takes
    ``LoopHooks`` (inpainting). Grid kinds set ``num_steps``/``rho`` (``grid.noise_grid``); the
    others run on the training levels."""

    name = ""
    init = "gaussian"
    denoise = True
    hooks = False
    num_steps: int | None = None
    rho: float | None = None

    def grid(self, sigmas, continuous: bool = False) -> NoiseGrid:
        """The sigmas this kind visits (ValueError for a grid the network cannot take)."""
        return noise_grid(sigmas, self.num_steps, self.rho, continuous)

    def run(
        self,
        score: ScoreFn,
        sigmas,
        grid: NoiseGrid,
        x,
        noise: NoiseSource,
        denoise: bool,
        keep_frames: bool = False,
        progress: bool = True,
        hooks: LoopHooks | None = None,
    ) -> LangevinResult:
        """Run from the state ``x`` with the (already wrapped) ``score`` on ``grid``."""
        raise NotImplementedError

    def nfe(self, num_levels: int, denoise: bool) -> int:
        """Network evaluations per sample for a network with ``num_levels`` training levels."""
        raise NotImplementedError

    def frame_labels(self, grid: NoiseGrid) -> list[str]:
        """One label per frame ``run(keep_frames=True)`` keeps: the state after each step, at the
        next grid sigma (mode=progression's column labels)."""
        return [f"sigma\n{s:.3g}" for s in grid.sigmas[1:]]

    def _steps(self, num_levels: int) -> int:
        return self.num_steps or num_levels

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Annealed(Kind):
    """Annealed Langevin dynamics, NCSN Algorithm 1: ``n_steps_each`` steps per training level,
    alpha_i = step_lr (sigma_i / sigma_L)^2; the only kind that takes inpainting's hooks."""

    name, init, denoise, hooks = "annealed", "uniform", False, True

    def __init__(self, step_lr: float = 1.2e-5, n_steps_each: int = 20):
        check(is_number(step_lr) and step_lr > 0, "step_lr", step_lr, "a number > 0")
        check(is_int(n_steps_each) and n_steps_each >= 1, "n_steps_each", n_steps_each, "an integer >= 1")
        self.step_lr, self.n_steps_each = float(step_lr), n_steps_each

    def run(self, score, sigmas, grid, x, noise, denoise, keep_frames=False, progress=True, hooks=None):
        return annealed_langevin(
            score, x, sigmas, self.step_lr, self.n_steps_each, denoise, None, keep_frames, progress, noise, hooks
        )

    def nfe(self, num_levels, denoise):
        return num_levels * self.n_steps_each + int(denoise)

    def frame_labels(self, grid):
        return [f"sigma\n{s:.3g}" for s in grid.sigmas]


class Langevin(Kind):
    """Plain Langevin dynamics at sigma_L (NCSN Eq. (4), the non-annealed baseline of Fig. 3):
    ``n_steps`` steps of size ``step_lr``, a frame every ``frame_every`` steps, then the
    denoising step at sigma_L when denoising."""

    name, init, denoise = "langevin", "uniform", False

    def __init__(self, step_lr: float = 1.2e-5, n_steps: int = 200, frame_every: int = 20):
        check(is_number(step_lr) and step_lr > 0, "step_lr", step_lr, "a number > 0")
        check(is_int(n_steps) and n_steps >= 1, "n_steps", n_steps, "an integer >= 1")
        check(is_int(frame_every) and frame_every >= 1, "frame_every", frame_every, "an integer >= 1")
        self.step_lr, self.n_steps, self.frame_every = float(step_lr), n_steps, frame_every

    def run(self, score, sigmas, grid, x, noise, denoise, keep_frames=False, progress=True, hooks=None):
        last = len(sigmas) - 1
        sigma_l = float(sigmas[-1]) if denoise else None
        return langevin(
            score, x, last, self.step_lr, self.n_steps, None, keep_frames, self.frame_every, progress, noise, sigma_l
        )

    def nfe(self, num_levels, denoise):
        return self.n_steps + int(denoise)

    def frame_labels(self, grid):
        return [f"sigma_L\nstep {(k + 1) * self.frame_every}" for k in range(self.n_steps // self.frame_every)]


class CAS(Kind):
    """Consistent annealed sampling (cas.py): one step per grid sigma with the dimensionless step
    ``eta`` (alpha_i = eta sigma_i^2; the paper's eps = eta sigma_L^2), so one value fits every
    schedule; ``eta`` must also be >= 1 - sigma_(i+1) / sigma_i on the grid (checked by ``grid``)."""

    name = "cas"

    def __init__(self, eta: float = 0.5, num_steps: int | None = None, rho: float | None = None):
        check(is_number(eta) and eta > 0, "eta", eta, "a number > 0")
        check_grid(num_steps, rho)
        self.eta, self.num_steps, self.rho = float(eta), num_steps, None if rho is None else float(rho)

    def grid(self, sigmas, continuous=False):
        grid = super().grid(sigmas, continuous)
        cas_betas(grid.sigmas, self.eta)  # eta's bound on this grid: refused before any work
        return grid

    def run(self, score, sigmas, grid, x, noise, denoise, keep_frames=False, progress=True, hooks=None):
        return consistent_annealed(score, x, grid, self.eta, noise, denoise, keep_frames, progress)

    def nfe(self, num_levels, denoise):
        return self._steps(num_levels)

    def frame_labels(self, grid):
        return [*super().frame_labels(grid), "last step"]


class PC(Kind):
    """Predictor-corrector sampling of the VE SDE (pc.py): per grid sigma ``n_corrector`` Langevin
    corrector steps at signal-to-noise ratio ``snr``, then the reverse-diffusion predictor."""

    name = "pc"

    def __init__(self, snr: float = 0.16, n_corrector: int = 1, num_steps: int | None = None, rho: float | None = None):
        check(is_number(snr) and snr > 0, "snr", snr, "a number > 0")
        check(is_int(n_corrector) and n_corrector >= 0, "n_corrector", n_corrector, "an integer >= 0")
        check_grid(num_steps, rho)
        self.snr, self.n_corrector = float(snr), n_corrector
        self.num_steps, self.rho = num_steps, None if rho is None else float(rho)

    def run(self, score, sigmas, grid, x, noise, denoise, keep_frames=False, progress=True, hooks=None):
        return predictor_corrector(score, x, grid, self.snr, self.n_corrector, noise, denoise, keep_frames, progress)

    def nfe(self, num_levels, denoise):
        return self._steps(num_levels) * (1 + self.n_corrector)

    def frame_labels(self, grid):
        return [*super().frame_labels(grid), "sigma\n0"]


class ODE(Kind):
    """The probability-flow ODE with Heun's method (ode.py; Karras et al. 2022, Algorithm 1),
    deterministic given the initial state; with denoising a last Euler step to sigma = 0."""

    name = "ode"

    def __init__(self, num_steps: int | None = None, rho: float | None = 7.0):
        check_grid(num_steps, rho)
        self.num_steps, self.rho = num_steps, None if rho is None else float(rho)

    def run(self, score, sigmas, grid, x, noise, denoise, keep_frames=False, progress=True, hooks=None):
        return probability_flow(score, x, grid, denoise, keep_frames, progress)

    def nfe(self, num_levels, denoise):
        return 2 * (self._steps(num_levels) - 1) + int(denoise)
