"""How far a learned score is from the exact score of the Gaussian-smoothed training set, by sigma.

The training set X = {x_1, ..., x_N} (D dimensions each) smoothed at noise level sigma is the
mixture

    p_sigma(x) = (1/N) sum_i N(x; x_i, sigma^2 I),

whose score is known in closed form:

    grad log p_sigma(x) = sum_i w_i(x) (x_i - x) / sigma^2 = (D(x) - x) / sigma^2,
    w_i(x) = softmax_i(-||x - x_i||^2 / (2 sigma^2)),   D(x) = sum_i w_i(x) x_i

(D is the ideal denoiser, Tweedie's posterior mean E[x_i | x]). It is what DSM training on X
converges to with an unlimited network: the minimiser of the expected DSM loss over the
training images. ``smoothed_score`` computes it in float64 over chunks of X with a running
(streaming) logsumexp, so N x M logits never exist at once and no weight underflows to 0/0.

``score_error_by_sigma`` evaluates, for each sigma and on the SAME perturbed held-out points
x~ = y + sigma z (y from the held-out images, z ~ N(0, I) from one fixed generator):

* ``loss``: the network's DSM loss in this repository's weighting (``ncsn.core.losses.dsm_loss``,
  lambda(sigma) = sigma^p, p = ``anneal_power``, 2 in the papers):
  l = 1/2 sigma^p ||s_theta(x~, sigma) + z / sigma||^2 (summed over dimensions, mean over points);
* ``floor``: the same loss of the exact smoothed-training-set score on the same points,
  1/2 sigma^p ||grad log p_sigma(x~) + z / sigma||^2. This is the DSM loss on held-out data of
  the ideal denoiser *of the training set*; it is not a lower bound for the held-out loss (the
  population's score, unknown, is): where the smoothed set memorises (small sigma, below) a
  network that generalises beats it;
* ``score_error``: 1/2 sigma^p ||s_theta - grad log p_sigma||^2 (mean over points, loss units:
  if the reference were the true score of x~'s distribution, loss = floor + score_error in
  expectation); ``rel_score_error``: E||s_theta - grad log p_sigma||^2 / E||grad log p_sigma||^2;
* ``n_eff``: the median over points of the effective number of training images in the
  posterior mean, 1 / sum_i w_i^2 (1: D(x~) is one training image, memorisation).

From which sigma the smoothed set is a fair reference: the log-weights of two training images
x_a, x_b at x~ = y + sigma z differ by (||y - x_b||^2 - ||y - x_a||^2) / (2 sigma^2) plus
z . (x_a - x_b) / sigma, a noise term along ONE direction, of standard deviation
||x_a - x_b|| / sigma with no sqrt(D) factor. So the posterior collapses onto the nearest
training image (n_eff ~ 1) while sigma is below the typical distance from a held-out image to
its nearest training image, d_nn (absolute L2 distance, not per dimension), and averages over
many images above it. ``fair_sigma`` is the median of d_nn over the held-out images: above it
the reference generalises (digits, 8x8: d_nn ~ 1.0, n_eff ~ 100 at sigma = 1.0, 8 at 0.5, 1.0
at 0.13), below it the network should NOT match it. A per-dimension rule d_nn / sqrt(D) (0.13 on
the digits) falls where n_eff is still 1 and is too low. Training images are dequantised in
training (pixels moved by less than 1/levels); the reference uses the stored images, which is
another reason not to read it below fair_sigma.

Plain torch; no Lightning or Hydra.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable

import torch

ScoreAt = Callable[[torch.Tensor, int], torch.Tensor]  # (x~ (M, ...), index into ``sigmas``) -> score


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).to(torch.float64)


def posterior_mean(x: torch.Tensor, train: torch.Tensor, sigma, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(D(x), n_eff): the ideal denoiser sum_i w_i(x) x_i (float64, x's shape) and the effective
    number of training images 1 / sum_i w_i^2 (M,), for points ``x`` (M, ...) and training images
    ``train`` (N, ...) at noise level ``sigma`` (a number or (M,) tensor). Float64 throughout; the
    training images are visited ``chunk`` at a time with a running logsumexp."""
    if len(train) == 0:
        raise ValueError("posterior_mean: the training set is empty")
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    xf = _flat(x)
    sig = torch.as_tensor(sigma, dtype=torch.float64, device=xf.device).reshape(-1, 1)
    if (sig <= 0).any():
        raise ValueError(f"sigma must be > 0, got {sigma}")
    inv = 0.5 / sig**2
    x_sq = (xf * xf).sum(1, keepdim=True)
    m = torch.full((len(xf), 1), -math.inf, dtype=torch.float64, device=xf.device)  # running max logit
    s = torch.zeros_like(m)  # sum_i exp(logit_i - m)
    s2 = torch.zeros_like(m)  # sum_i exp(2 (logit_i - m))
    acc = torch.zeros_like(xf)  # sum_i exp(logit_i - m) x_i
    for start in range(0, len(train), chunk):
        xi = _flat(train[start : start + chunk].to(xf.device))
        dist = (x_sq - 2 * xf @ xi.T + (xi * xi).sum(1)[None]).clamp_min(0)
        logits = -dist * inv
        new_m = torch.maximum(m, logits.max(1, keepdim=True).values)
        scale = torch.exp(m - new_m)
        e = torch.exp(logits - new_m)
        s = s * scale + e.sum(1, keepdim=True)
        s2 = s2 * scale**2 + (e * e).sum(1, keepdim=True)
        acc = acc * scale + e @ xi
        m = new_m
    return (acc / s).reshape(x.shape), (s * s / s2).flatten()


def smoothed_score(x: torch.Tensor, train: torch.Tensor, sigma, chunk: int = 4096) -> torch.Tensor:
    """grad log p_sigma(x) of the Gaussian-smoothed training set, (D(x) - x) / sigma^2, in float64
    (see the module docstring)."""
    mean, _ = posterior_mean(x, train, sigma, chunk)
    sig = torch.as_tensor(sigma, dtype=torch.float64, device=mean.device).reshape(-1, *([1] * (x.dim() - 1)))
    return (mean - x.to(torch.float64)) / sig**2


def nearest_distance(y: torch.Tensor, train: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(M,) float64: the L2 distance from each point of ``y`` to its nearest image of ``train``."""
    yf = _flat(y)
    y_sq = (yf * yf).sum(1, keepdim=True)
    best = torch.full((len(yf),), math.inf, dtype=torch.float64, device=yf.device)
    for start in range(0, len(train), chunk):
        xi = _flat(train[start : start + chunk].to(yf.device))
        d2 = (y_sq - 2 * yf @ xi.T + (xi * xi).sum(1)[None]).clamp_min(0)
        best = torch.minimum(best, d2.min(1).values)
    return best.sqrt()


def fair_sigma(held_out: torch.Tensor, train: torch.Tensor, chunk: int = 4096) -> float:
    """The sigma above which the smoothed training set is a fair reference for held-out data: the
    median distance from a held-out image to its nearest training image (module docstring)."""
    return float(nearest_distance(held_out, train, chunk).median())


def score_error_by_sigma(
    score_at: ScoreAt,
    train: torch.Tensor,
    held_out: torch.Tensor,
    sigmas,
    anneal_power: float = 2.0,
    n_noise: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    chunk: int = 4096,
) -> list[dict]:
    """One row per sigma of ``sigmas``: ``sigma, loss, floor, gap_se, score_error,
    rel_score_error, n_eff, n`` (module docstring; ``gap_se``: the standard error of the mean of
    the paired difference loss - floor). ``score_at(x~, k)`` is the network at ``sigmas[k]``.

    For each sigma in order, each batch of ``held_out`` (``batch_size`` images) and each of the
    ``n_noise`` draws, z is drawn as ``ncsn.core.losses.dsm_loss`` draws it (``torch.randn`` of the
    batch's shape, dtype and device, from ``generator``) and x~ = y + sigma z in the held-out
    images' dtype: the network's ``loss`` is the repository's DSM loss of those draws. The
    reference is evaluated in float64 at the same x~."""
    if n_noise < 1:
        raise ValueError(f"n_noise={n_noise} must be >= 1")
    if len(held_out) == 0:
        raise ValueError("score_error_by_sigma: no held-out images")
    sig_list = torch.as_tensor(sigmas).to(held_out.dtype)  # the sigma the network's loss uses
    rows = []
    for k in range(len(sig_list)):
        sigma = sig_list[k].to(held_out.device)
        s64 = float(sigma)
        weight = 0.5 * s64**anneal_power
        loss, floor, err, ref_sq, neff = [], [], [], [], []
        for y in held_out.split(batch_size):
            for _ in range(n_noise):
                z = torch.randn(y.shape, device=y.device, dtype=y.dtype, generator=generator)
                xt = y + sigma * z
                with torch.no_grad():
                    s_net = score_at(xt, k).to(torch.float64)
                mean, n_eff = posterior_mean(xt, train, s64, chunk)
                s_ref = (mean - xt.to(torch.float64)) / s64**2
                target = z.to(torch.float64) / s64
                loss.append(weight * ((s_net + target) ** 2).flatten(1).sum(1))
                floor.append(weight * ((s_ref + target) ** 2).flatten(1).sum(1))
                err.append(weight * ((s_net - s_ref) ** 2).flatten(1).sum(1))
                ref_sq.append(weight * (s_ref**2).flatten(1).sum(1))
                neff.append(n_eff)
        loss_t, floor_t, err_t, ref_sq_t = (torch.cat(v) for v in (loss, floor, err, ref_sq))
        gap = loss_t - floor_t
        n = len(loss_t)
        rows.append(
            {
                "sigma": s64,
                "loss": float(loss_t.mean()),
                "floor": float(floor_t.mean()),
                "gap_se": float(gap.std() / math.sqrt(n)) if n > 1 else math.nan,
                "score_error": float(err_t.mean()),
                "rel_score_error": float(err_t.mean() / ref_sq_t.mean()),
                "n_eff": float(torch.cat(neff).median()),
                "n": n,
            }
        )
    return rows


def csv_text(rows: list[dict], fair: float, levels: bool) -> str:
    """``score_error.csv``: a ``level`` column (the index when ``rows`` follow the training levels,
    else empty), the columns of ``score_error_by_sigma`` and ``fair`` (sigma >= ``fair``)."""
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=["level", *rows[0], "fair"], lineterminator="\n")
    w.writeheader()
    for k, r in enumerate(rows):
        w.writerow({"level": k if levels else "", **r, "fair": r["sigma"] >= fair})
    return text.getvalue()
