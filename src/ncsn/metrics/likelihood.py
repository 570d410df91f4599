"""Held-out likelihood in bits/dim by the probability-flow ODE (Song et al. 2021, "Score-Based
Generative Modeling through Stochastic Differential Equations", Sec. 4.3 and App. D.2), for
sigma-continuous score networks.

The variance-exploding process x_sigma = x_0 + sigma z has the probability-flow ODE

    dx/dsigma = f(x, sigma) = -sigma s(x, sigma),              s ~ grad log p_sigma      (1)

(``ncsn.sampling.ode``). Along a solution the log-density changes by the instantaneous
change-of-variables formula (Chen et al. 2018), d log p_sigma(x(sigma)) / dsigma = -div f, so

    log p_{sigma_min}(x) = log p_{sigma_max}(x(sigma_max)) - int_{sigma_min}^{sigma_max} sigma tr(ds/dx) dsigma.   (2)

Approximations, as in score_sde's likelihood code: the data density is p_{sigma_min} (the
smallest training sigma, not 0), and the prior is p_{sigma_max} ~ N(0, sigma_max^2 I) (the true
one is the data convolved with N(0, sigma_max^2 I): close when sigma_max is much larger than the
data's spread; ``LikelihoodResult.prior_fit`` = |z|^2 / (D sigma_max^2) is near 1 when it is).
The trace is Hutchinson-Skilling's estimator tr(J) ~ eps^T J eps with one Rademacher eps per
image held fixed along the path (unbiased; one vector-Jacobian product per evaluation), or exact
(D vector-Jacobian products per evaluation: small D only).

(1) and (2) are integrated together from sigma_min up to sigma_max with Heun's method (the
sampler's solver, ``heun_path``, with the divergence carried along) on Karras' rho-spaced grid
of ``num_steps`` sigmas: 2 (num_steps - 1) network evaluations, each with a backward pass.

Uniform dequantization: an image of ``levels`` grey levels, x = k / (levels - 1), becomes
y = (k + u) / levels, u ~ U[0, 1)^D (what training's ``dequantize`` draws), and

    bits/dim = -log p(y) / (D ln 2) + log2(levels),                                          (3)

an upper bound in expectation over u on the discrete model's negative log2-likelihood per pixel
(8-bit images: + 8, score_sde's offset for data in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ..sampling.grid import karras_sigmas
from ..sampling.langevin import progress_bar
from ..sampling.seeds import SampleNoise, phi

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (N, ...), sigma (N,)) -> score
ESTIMATORS = ("hutchinson", "exact")


class LikelihoodResult(NamedTuple):
    logp: torch.Tensor  # (N,) float64: log p_{sigma_min}(x) in the units of x (nats)
    prior_logp: torch.Tensor  # (N,) log N(x(sigma_max); 0, sigma_max^2 I)
    delta_logp: torch.Tensor  # (N,) the integral in (2)
    prior_fit: torch.Tensor  # (N,) |x(sigma_max)|^2 / (D sigma_max^2): ~1 when the prior fits
    nfe: int  # network evaluations (each with a backward pass)


def _score_and_trace(score: ScoreFn, x: torch.Tensor, sigma: float, eps: torch.Tensor | None):
    """(s(x, sigma), tr(ds/dx) per sample (float64)): Hutchinson's eps^T (ds/dx) eps, or exact."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        s = score(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))
        if eps is not None:
            (vjp,) = torch.autograd.grad(s, x, eps)
            return s.detach(), (vjp * eps).flatten(1).sum(1).double()
        flat = s.flatten(1)
        tr = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for i in range(flat.shape[1]):
            (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
            tr += g.flatten(1)[:, i].double()
        return s.detach(), tr


def ode_log_likelihood(
    score: ScoreFn,
    x: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
    num_steps: int,
    rho: float = 7.0,
    eps: torch.Tensor | None = None,
) -> LikelihoodResult:
    """log p_{sigma_min}(x) per sample by (1)-(2), Heun on ``num_steps`` Karras sigmas from
    ``sigma_min`` to ``sigma_max``. ``eps``: the Hutchinson vectors (like ``x``); None: exact trace."""
    if num_steps < 2:
        raise ValueError(f"num_steps={num_steps}: must be >= 2")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigmas: need 0 < sigma_min ({sigma_min}) < sigma_max ({sigma_max})")
    path = karras_sigmas(sigma_max, sigma_min, num_steps, rho)[::-1]  # increasing
    delta = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for k in range(num_steps - 1):
        a, b = path[k], path[k + 1]
        s, tr = _score_and_trace(score, x, a, eps)
        d, div = -a * s, -a * tr  # f and div f at (x, a)
        x_e = x + (b - a) * d
        s, tr = _score_and_trace(score, x_e, b, eps)
        x = x + (b - a) * 0.5 * (d - b * s)
        delta = delta + (b - a) * 0.5 * (div - b * tr)
    nfe = 2 * (num_steps - 1)
    dims = x[0].numel()
    z2 = x.detach().double().flatten(1).pow(2).sum(1)
    prior = -0.5 * dims * math.log(2 * math.pi * sigma_max**2) - z2 / (2 * sigma_max**2)
    return LikelihoodResult(prior + delta, prior, delta, z2 / (dims * sigma_max**2), nfe)


def dequantize(x: torch.Tensor, levels: int, u: torch.Tensor) -> torch.Tensor:
    """y = (k + u) / levels for x = k / (levels - 1) in [0, 1] and u in [0, 1)."""
    return (torch.round(x * (levels - 1)) + u) / levels


def bits_per_dim(logp: torch.Tensor, dims: int, levels: int) -> torch.Tensor:
    """(3): -log p(y) / (D ln 2) + log2(levels) for log p of dequantized data y in [0, 1]^D."""
    return -logp / (dims * math.log(2)) + math.log2(levels)


def check_continuous(net) -> None:
    """ValueError unless ``net`` can be evaluated at any sigma (the ODE visits every sigma)."""
    if not getattr(net, "continuous", False):
        raise ValueError(
            f"bits/dim needs a sigma-continuous network (the probability-flow ODE evaluates the score at every "
            f"sigma between sigma_L and sigma_1); this {type(net).__name__} is conditioned on its "
            f"{len(net.sigmas)} training levels (train with model.conditioning=sigma, or NCSNv2)"
        )


def image_bpd(
    net,
    images: torch.Tensor,
    index: torch.Tensor,
    seed: int,
    levels: int,
    num_steps: int,
    rho: float = 7.0,
    estimator: str = "hutchinson",
) -> tuple[torch.Tensor, LikelihoodResult]:
    """Bits/dim (N,) of images (N, C, H, W) in [0, 1] (grid k / (levels - 1)) under a
    sigma-continuous ``net`` between its smallest and largest training sigma. Image ``index[r]``
    of ``seed`` has its own dequantization noise and Hutchinson vector (``SampleNoise``: the same
    numbers in any batch)."""
    check_continuous(net)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}: must be one of {ESTIMATORS}")
    noise = SampleNoise(seed, index, images.device)
    shape = tuple(images.shape[1:])
    y = dequantize(images, levels, phi(noise.normal(shape)).clamp(max=1 - 2**-24).to(images.dtype))
    eps = torch.where(noise.normal(shape) >= 0, 1.0, -1.0).to(images.dtype) if estimator == "hutchinson" else None
    sig = [float(s) for s in net.sigmas]
    res = ode_log_likelihood(net, y, min(sig), max(sig), num_steps, rho, eps)
    return bits_per_dim(res.logp, y[0].numel(), levels), res


def heldout_bpd(
    net,
    dataset,
    n_images: int,
    batch_size: int,
    seed: int,
    levels: int,
    num_steps: int,
    rho: float = 7.0,
    estimator: str = "hutchinson",
    device="cpu",
    progress: bool = True,
) -> dict:
    """Bits/dim of the first ``n_images`` images of ``dataset`` (items ``(x, y)``, x in [0, 1]),
    ``batch_size`` per ODE solve: the mean ``bpd``, its standard error over images ``bpd_se``,
    the mean ``prior_fit`` and the network evaluations per solve ``nfe``."""
    if n_images > len(dataset):
        raise ValueError(f"n_images={n_images}: the split has {len(dataset)} images")
    bpd, fit, nfe = [], [], 0
    bar = progress_bar(n_images, "bits/dim", progress)
    for index in torch.arange(n_images).split(batch_size):
        x = torch.stack([dataset[int(i)][0] for i in index]).to(device)
        b, res = image_bpd(net, x, index, seed, levels, num_steps, rho, estimator)
        bpd.append(b.cpu())
        fit.append(res.prior_fit.cpu())
        nfe = res.nfe
        bar.update(len(index))
    bar.close()
    per_image = torch.cat(bpd)
    se = float(per_image.std() / math.sqrt(len(per_image))) if len(per_image) > 1 else float("nan")
    return {"bpd": float(per_image.mean()), "bpd_se": se, "prior_fit": float(torch.cat(fit).mean()), "nfe": nfe}
