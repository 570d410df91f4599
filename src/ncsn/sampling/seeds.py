"""Noise sources of the samplers: where every random number of a sampling run comes from.

A sampler asks its noise source for a standard normal tensor shaped like its state, once for
the initial state and once per noise draw of the update rule, in the same order for every
sample. Three sources:

* ``SampleNoise(seed, index)``: per-sample streams. Sample k's numbers depend only on
  (seed, k) and on how many draws came before: a counter-based hash (SplitMix64's finaliser
  over (seed, k, draw, element)), computed with int64 tensor arithmetic on the state's device.
  So a sample does not change with the batch size or with how samples are split over ranks:
  rank r of w drawing the indices r, r + w, ... gets exactly those samples of the one-process
  run. Normals by Box-Muller from two 24-bit uniforms (|z| <= 5.9).
* ``GeneratorNoise(generator)``: ``torch.randn``/``torch.rand`` from one ``torch.Generator``
  for the whole batch (the reference code's stream; ``annealed_langevin(generator=...)``).
* ``SlerpNoise(a, b, t)``: NCSNv2 interpolation: the draws of two sources slerped at weights t.

Initial states built from a normal draw g (``uniform(shape)`` = Phi(g), exactly uniform) make
every sample a deterministic function of its normal draws, which interpolation slerps.
"""

from __future__ import annotations

import math

import torch

# SplitMix64 constants as signed int64 (torch's int64 arithmetic wraps modulo 2^64).
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_M1 = 0xBF58476D1CE4E5B9 - 2**64
_M2 = 0x94D049BB133111EB - 2**64
_STREAM = 0xD1B54A32D192ED03 - 2**64


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser (a bijection of 64-bit words) on an int64 tensor."""
    x = x ^ _shr(x, 30)
    x = x * _M1
    x = x ^ _shr(x, 27)
    x = x * _M2
    return x ^ _shr(x, 31)


def _scalar64(v: int) -> int:
    v %= 2**64
    return v - 2**64 if v >= 2**63 else v


def normal_from_bits(h: torch.Tensor) -> torch.Tensor:
    """Standard normals (float32) from 64-bit hashes by Box-Muller on two 24-bit uniforms."""
    a = _shr(h, 40).to(torch.float32)  # top 24 bits
    b = (_shr(h, 16) & 0xFFFFFF).to(torch.float32)  # next 24 bits
    u1 = (a + 0.5) * 2.0**-24  # in (0, 1)
    u2 = b * 2.0**-24
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)


def phi(g: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF: uniform on (0, 1) for g ~ N(0, 1)."""
    return 0.5 * (1.0 + torch.erf(g / math.sqrt(2.0)))


def uniform_from_gaussian(g: torch.Tensor, init_low: float, init_high: float) -> torch.Tensor:
    """x = init_low + (init_high - init_low) * Phi(g): uniform on [init_low, init_high] for g ~ N(0, 1)."""
    return init_low + (init_high - init_low) * phi(g)


class NoiseSource:
    """Base of the noise sources: ``normal(shape)`` draws (N, *shape); ``source(x)`` draws like x."""

    n: int

    def normal(self, shape) -> torch.Tensor:
        raise NotImplementedError

    def uniform(self, shape) -> torch.Tensor:
        return phi(self.normal(shape))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normal(tuple(x.shape[1:]))
        if z.shape != x.shape:
            raise ValueError(f"noise of shape {tuple(z.shape)} for a state of shape {tuple(x.shape)}")
        return z.to(device=x.device, dtype=x.dtype)


class SampleNoise(NoiseSource):
    """Per-sample streams: sample ``index[r]`` of ``seed`` in row r (see the module docstring)."""

    def __init__(self, seed: int, index, device="cpu", draws: int = 0):
        self.seed = int(seed)
        self.device = torch.device(device)
        self.index = torch.as_tensor(index, dtype=torch.long, device=self.device).reshape(-1)
        self.n = len(self.index)
        seed_key = mix64(torch.tensor(_scalar64(self.seed * _STREAM + 1), dtype=torch.long))
        self._keys = mix64(self.index * _GOLDEN + seed_key.to(self.device))  # (N,)
        self.draws = draws

    def normal(self, shape) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        numel = math.prod(shape)
        draw_key = mix64(self._keys + _scalar64((self.draws + 1) * _STREAM))  # (N,)
        self.draws += 1
        j = torch.arange(numel, dtype=torch.long, device=self.device)
        h = mix64(draw_key[:, None] + j[None, :] * _GOLDEN)
        return normal_from_bits(h).reshape(self.n, *shape)


class GeneratorNoise(NoiseSource):
    """``torch.randn`` / ``torch.rand`` of the whole batch from one generator (one shared stream)."""

    def __init__(self, n: int, generator: torch.Generator | None = None, device=None, dtype=None):
        self.n, self.generator, self.device, self.dtype = n, generator, device, dtype

    def normal(self, shape) -> torch.Tensor:
        return torch.randn((self.n, *shape), generator=self.generator, device=self.device, dtype=self.dtype)

    def uniform(self, shape) -> torch.Tensor:
        return torch.rand((self.n, *shape), generator=self.generator, device=self.device, dtype=self.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)


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


class SlerpNoise(NoiseSource):
    """The draws of sources ``a`` and ``b`` (same N) slerped at the weights ``t``, flattened to
    (N * T, ...) (sample n, weight k at row n * T + k). With ``b=None``: the draws of ``a``."""

    def __init__(self, a: NoiseSource, b: NoiseSource | None, t: torch.Tensor):
        self.a, self.b = a, b
        self.t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        self.n = a.n * (1 if b is None else len(self.t))

    def normal(self, shape) -> torch.Tensor:
        za = self.a.normal(shape)
        if self.b is None:
            return za
        zb = self.b.normal(shape)
        return slerp(za, zb, self.t.to(za.device)).reshape(-1, *za.shape[1:])
