"""Interpolation between samples by slerping their injected noise (NCSNv2, Sec. 6 / Fig. 5-6).

A sample of annealed Langevin dynamics is a deterministic function of its injected noise: the
initial state and the z of every step. Two seeds give two noise streams; interpolating both
streams spherically gives a row of samples that moves from the sample of seed a to the sample
of seed b. The endpoints ARE the samples of the seeds alone: ``sample_from_seed`` builds them
with the same noise construction.

Noise construction (per seed, on ``device``, from ``torch.Generator(device).manual_seed(seed)``):
first g ~ N(0, I) of ``shape``, mapped to the initial state
x_0 = init_low + (init_high - init_low) * Phi(g) (exactly uniform on [init_low, init_high]),
then one z ~ N(0, I) of ``shape`` per Langevin step. Interpolation slerps g and every z.
(ermongroup/ncsnv2 mixes the step noise as sin(theta) z_a + cos(theta) z_b, which is slerp for
orthogonal z_a, z_b, i.e. for independent high-dimensional noise; here the exact slerp is used
so that the endpoints are bit-for-bit the seeds' noise.)

Needs ``sampling.annealed_langevin(..., noise=...)``: a callable returning each step's z.
"""

from __future__ import annotations

import math

import torch

from ncsn.sampling import ScoreFn, annealed_langevin


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation (Shoemake 1985) per sample, over all non-batch dims.

    a, b: (N, *D); t: 1-D weights (T,). Returns (N, T, *D) with
    slerp_t = sin((1 - t) Omega) / sin(Omega) a + sin(t Omega) / sin(Omega) b,
    Omega the angle between a[n] and b[n]; linear interpolation where Omega ~ 0 or a norm is 0.
    t = 0 gives exactly a, t = 1 exactly b.
    """
    if a.shape != b.shape:
        raise ValueError(f"slerp needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    n, rest = a.shape[0], a.shape[1:]
    a64, b64 = a.reshape(n, 1, -1).double(), b.reshape(n, 1, -1).double()
    t64 = torch.as_tensor(t, dtype=torch.float64, device=a.device).reshape(1, -1, 1)
    na, nb = a64.norm(dim=-1, keepdim=True), b64.norm(dim=-1, keepdim=True)
    cos = ((a64 * b64).sum(-1, keepdim=True) / (na * nb).clamp_min(1e-300)).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    spherical = (sin > 1e-6) & (na > 0) & (nb > 0)
    safe = torch.where(spherical, sin, torch.ones_like(sin))
    wa = torch.where(spherical, torch.sin((1.0 - t64) * omega) / safe, 1.0 - t64)
    wb = torch.where(spherical, torch.sin(t64 * omega) / safe, t64)
    out = wa * a64 + wb * b64  # (N, T, prod D)
    return out.to(a.dtype).reshape(n, -1, *rest)


def uniform_from_gaussian(g: torch.Tensor, init_low: float, init_high: float) -> torch.Tensor:
    """x = init_low + (init_high - init_low) * Phi(g): uniform on [init_low, init_high] for g ~ N(0, 1)."""
    return init_low + (init_high - init_low) * 0.5 * (1.0 + torch.erf(g / math.sqrt(2.0)))


class SlerpNoise:
    """Noise source: each call draws N(0, I) of ``shape`` from the generators of ``seed_a`` and
    ``seed_b`` and returns their slerp at the weights ``t``, flattened to (N * T, *shape[1:])
    (sample n, weight k at row n * T + k). With a single seed (``seed_b=None``) it returns the
    draws of ``seed_a`` alone, i.e. the slerp's t = 0 endpoint.
    """

    def __init__(self, shape, seed_a: int, seed_b: int | None, t: torch.Tensor, device="cpu"):
        self.shape = tuple(int(s) for s in shape)
        self.device = torch.device(device)
        self.t = torch.as_tensor(t, dtype=torch.float64)
        self.gen_a = torch.Generator(self.device).manual_seed(int(seed_a))
        self.gen_b = None if seed_b is None else torch.Generator(self.device).manual_seed(int(seed_b))

    def draw(self) -> torch.Tensor:
        za = torch.randn(self.shape, generator=self.gen_a, device=self.device)
        if self.gen_b is None:
            return za
        zb = torch.randn(self.shape, generator=self.gen_b, device=self.device)
        return slerp(za, zb, self.t.to(self.device)).reshape(-1, *self.shape[1:])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.draw()
        if z.shape != x.shape:
            raise ValueError(f"noise of shape {tuple(z.shape)} for a state of shape {tuple(x.shape)}")
        return z.to(dtype=x.dtype)


def _run(score, sigmas, step_lr, n_steps_each, source, init_low, init_high, denoise, progress):
    x0 = uniform_from_gaussian(source.draw(), init_low, init_high)
    result = annealed_langevin(
        score, x0, sigmas, step_lr, n_steps_each, denoise=denoise, progress=progress, noise=source
    )
    return result.samples


def sample_from_seed(
    score: ScoreFn,
    sigmas: torch.Tensor,
    step_lr: float,
    n_steps_each: int,
    shape,
    seed: int,
    init_low: float = 0.0,
    init_high: float = 1.0,
    denoise: bool = True,
    device="cpu",
    progress: bool = True,
) -> torch.Tensor:
    """Annealed Langevin samples (NCSN Algorithm 1) of ``shape`` driven by one seed's noise
    (the construction in the module docstring): the endpoints of ``interpolate``."""
    source = SlerpNoise(shape, seed, None, torch.zeros(1), device)
    return _run(score, sigmas, step_lr, n_steps_each, source, init_low, init_high, denoise, progress)


def interpolate(
    score: ScoreFn,
    sigmas: torch.Tensor,
    step_lr: float,
    n_steps_each: int,
    shape,
    seed_a: int,
    seed_b: int,
    n_interp: int,
    init_low: float = 0.0,
    init_high: float = 1.0,
    denoise: bool = True,
    device="cpu",
    progress: bool = True,
) -> torch.Tensor:
    """NCSNv2 interpolation: annealed Langevin with the initial state and every step's noise
    slerped between the noise of ``seed_a`` and ``seed_b`` at t = k / (n_interp - 1).

    ``shape`` = (n_rows, *sample_shape): one row per pair. Returns (n_rows, n_interp,
    *sample_shape); [:, 0] equals ``sample_from_seed(..., seed_a)`` and [:, -1] the one of
    ``seed_b`` (exactly, for a score function whose output per sample does not depend on the
    rest of the batch). ``save_grid(out.flatten(0, 1), path, nrow=n_interp)`` shows the rows.
    """
    if n_interp < 2:
        raise ValueError(f"n_interp={n_interp} must be >= 2 (both endpoints)")
    t = torch.arange(n_interp, dtype=torch.float64) / (n_interp - 1)
    source = SlerpNoise(shape, seed_a, seed_b, t, device)
    out = _run(score, sigmas, step_lr, n_steps_each, source, init_low, init_high, denoise, progress)
    return out.reshape(shape[0], n_interp, *shape[1:])
