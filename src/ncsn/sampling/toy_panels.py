"""The numbers behind NCSN Fig. 3 on a 2-D Gaussian mixture: what ``figures.toy_figure`` draws.

(a) data samples, (b) plain Langevin dynamics (NCSN Eq. (4)) with the exact score at the smallest
sigma, (c) annealed Langevin dynamics (Algorithm 1) with exact scores, and, given a learned score,
(d) its samples and its score field against the exact one at the smallest sigma.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .kinds import Annealed
from .langevin import ScoreFn, annealed_langevin, langevin

_KEYS = ("data", "langevin", "annealed")


@dataclass
class ToyPanels:
    """Points (N, 2), mode weights and, with a learned score, the score fields on a grid."""

    lim: float  # the panels show [-lim, lim]^2
    data: torch.Tensor
    langevin: torch.Tensor
    annealed: torch.Tensor
    weights: dict  # "data", "langevin", "annealed"[, "learned"]: one weight per mixture mode
    learned: torch.Tensor | None = None  # samples drawn with the learned score
    grid: torch.Tensor | None = None  # (G, 2) points where the score fields are evaluated
    exact_field: torch.Tensor | None = None  # (G, 2) exact score at the smallest sigma
    learned_field: torch.Tensor | None = None  # (G, 2) learned score there
    score_rel_error: float | None = None  # E_p[|s_theta - s|^2] / E_p[|s|^2] over the grid

    def numbers(self) -> dict:
        """{"data", "langevin", "annealed"[, "learned"]: weights as floats[, "score_rel_error"]}."""
        out = {k: [float(v) for v in w] for k, w in self.weights.items()}
        return out if self.score_rel_error is None else {**out, "score_rel_error": self.score_rel_error}


def score_field(mixture, sigmas: torch.Tensor, learned: ScoreFn, lim: float, n: int = 21) -> tuple:
    """The exact and learned scores at the smallest sigma on an n x n grid over [-lim, lim]^2, and
    the density-weighted relative error E_p[|s_theta - s|^2] / E_p[|s|^2]: (grid, exact, learned, error)."""
    g = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    exact = mixture.score(pts, float(sigmas[-1])).double()
    est = learned(pts, torch.full((len(pts),), len(sigmas) - 1, dtype=torch.long)).detach().double().cpu()
    p = mixture.log_prob(pts, float(sigmas[-1])).exp()
    err = float((p * ((est - exact) ** 2).sum(1)).sum() / (p * (exact**2).sum(1)).sum().clamp_min(1e-12))
    return pts, exact, est, err


def toy_panels(
    mixture,
    sigmas: torch.Tensor,
    learned_score: ScoreFn | None = None,
    n: int = 1280,
    step_lr: float = 0.1,
    n_steps_each: int = 100,
    seed: int = 0,
    init_low: float = -8.0,
    init_high: float = 8.0,
    learned_samples: torch.Tensor | None = None,
) -> ToyPanels:
    """Sample the panels of NCSN Fig. 3 from one generator seeded with ``seed``: ``n`` data
    points; Langevin with exact scores at alpha_L = ``step_lr``, L * ``n_steps_each`` steps;
    annealed Langevin with exact scores; samplers start uniform on [init_low, init_high]^2.

    ``learned_score`` (``score(x, level_index)`` on float32 CPU points) adds panel (d): its score
    field, and ``learned_samples`` (e.g. drawn by the configured sampler, any kind) or else
    annealed Langevin with the learned score as in (c). Weights: ``mixture.mode_weights``.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    data = mixture.sample(n, generator=gen).float()
    exact = mixture.score_fn(sigmas)

    def init():
        return init_low + (init_high - init_low) * torch.rand(n, mixture.dim, generator=gen)

    n_total = len(sigmas) * n_steps_each
    plain = langevin(exact, init(), len(sigmas) - 1, step_lr, n_total, generator=gen, progress=False).samples
    annealed = annealed_langevin(exact, init(), sigmas, step_lr, n_steps_each, generator=gen, progress=False).samples
    lim = max(abs(init_low), abs(init_high))
    panels = ToyPanels(
        lim, data, plain, annealed, {k: mixture.mode_weights(v) for k, v in zip(_KEYS, (data, plain, annealed))}
    )
    if learned_score is None:
        return panels
    if learned_samples is None:
        learned_samples = annealed_langevin(
            learned_score, init(), sigmas, step_lr, n_steps_each, generator=gen, progress=False
        ).samples
    panels.learned = learned_samples.detach().float().cpu()
    panels.weights["learned"] = mixture.mode_weights(panels.learned)
    panels.grid, panels.exact_field, panels.learned_field, panels.score_rel_error = score_field(
        mixture, sigmas, learned_score, lim
    )
    return panels


def sampler_panels(mixture, sigmas: torch.Tensor, sampler, score: ScoreFn, seed: int, learned_samples) -> ToyPanels:
    """``toy_panels`` for a configured ``Sampler`` (any kind) and the samples it drew with the
    learned ``score``: its sample count and start range; panels (b), (c) with its step size and
    steps per level when it is annealed Langevin, else with ``toy_panels``' (NCSN Fig. 3's)."""
    kind = sampler.kind
    steps: dict[str, Any] = (
        {"step_lr": kind.step_lr, "n_steps_each": kind.n_steps_each} if isinstance(kind, Annealed) else {}
    )
    return toy_panels(
        mixture,
        sigmas,
        sampler.wrap(score),
        n=sampler.n_samples,
        seed=seed,
        init_low=sampler.init_low,
        init_high=sampler.init_high,
        learned_samples=learned_samples,
        **steps,
    )
