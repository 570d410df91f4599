"""The Fréchet distance between two Gaussians, and streaming feature statistics for it.

FID (Heusel et al., 2017) fits a Gaussian to the features of each image set and reports

    FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})

with mu the feature mean and S the unbiased (ddof=1) feature covariance.

Plain numpy/torch: nothing here knows about Lightning, Hydra or a feature extractor.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0 -> 0)."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^{1/2}) for symmetric PSD S1, S2.

    S1 S2 is similar to the symmetric PSD matrix M = S1^{1/2} S2 S1^{1/2}
    (S1 S2 = S1^{1/2} M S1^{-1/2}), so its eigenvalues are real and >= 0 and
    Tr((S1 S2)^{1/2}) = sum_i sqrt(eig_i(M)). Using ``eigh`` on M avoids the complex results and
    the failures of a general matrix square root (``scipy.linalg.sqrtm``) on the near-singular
    covariances one gets with fewer samples than feature dimensions; eigenvalues that round-off
    makes slightly negative are clipped to 0 (the role of pytorch-fid's ``eps`` offset and its
    "drop small imaginary parts" step).
    """
    s1 = 0.5 * (sigma1 + sigma1.T)  # remove asymmetric round-off before eigh
    s2 = 0.5 * (sigma2 + sigma2.T)
    root1 = _sqrt_psd(s1)
    m = root1 @ s2 @ root1
    w = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance |mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}), computed in float64.

    Accepts numpy arrays or torch tensors: mu of shape (D,), sigma of shape (D, D).
    """
    mu1, mu2 = (np.asarray(_to_numpy(m), dtype=np.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (np.asarray(_to_numpy(s), dtype=np.float64) for s in (sigma1, sigma2))
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, arr, shape in (
        ("mu1", mu1, (d,)),
        ("mu2", mu2, (d,)),
        ("sigma1", sigma1, (d, d)),
        ("sigma2", sigma2, (d, d)),
    ):
        if arr.shape != shape:
            raise ValueError(
                f"frechet_distance: {name} has shape {arr.shape}, expected {shape} "
                f"(mu1 has shape {mu1.shape}); pass means (D,) and covariances (D, D) "
                "of the same feature dimension D"
            )
        if not np.isfinite(arr).all():
            raise ValueError(
                f"frechet_distance: {name} contains NaN or inf; the features or the "
                "statistics file they came from are broken"
            )
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    # Identical statistics give 0 up to round-off, which can be slightly negative.
    return float(max(value, 0.0))


def _to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return x


class FeatureStats:
    """Streaming mean/covariance of feature vectors: count, sum and sum of outer products (float64).

    The three tensors are plain sums over samples, so the statistics of a data set split across
    DDP ranks are the element-wise sum of the per-rank tensors: all-reduce ``state_tensors()``
    with SUM (in place, or through ``all_reduce(fn)``), or ``merge`` another accumulator.
    The tensors live on ``device`` (NCCL needs them on the GPU).
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        if dim < 1:
            raise ValueError(f"FeatureStats: dim={dim}; the feature dimension must be >= 1")
        self.dim = dim
        self.count = torch.zeros((), dtype=torch.float64, device=device)
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    @property
    def n(self) -> int:
        return int(round(self.count.item()))

    @property
    def device(self) -> torch.device:
        return self.sum.device

    def to(self, device: torch.device | str) -> FeatureStats:
        self.count, self.sum, self.sum_outer = (t.to(device) for t in self.state_tensors())
        return self

    def reset(self) -> None:
        for t in self.state_tensors():
            t.zero_()

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Add a batch of features (N, D)."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"FeatureStats.update: features of shape {tuple(features.shape)}, expected (N, {self.dim})"
            )
        f = features.to(self.device, torch.float64)
        self.count += f.shape[0]
        self.sum += f.sum(dim=0)
        self.sum_outer += f.T @ f

    def state_tensors(self) -> list[torch.Tensor]:
        """[count, sum, sum_outer]: the tensors to sum across ranks (the accumulator's own storage)."""
        return [self.count, self.sum, self.sum_outer]

    def all_reduce(self, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> None:
        """Apply a SUM reduction ``fn`` to each state tensor.

        ``fn`` may reduce in place and return None (``torch.distributed.all_reduce``) or return the
        reduced tensor (Lightning's ``trainer.strategy.reduce(t, reduce_op="sum")``).
        """
        for t in self.state_tensors():
            out = fn(t)
            if out is not None and out is not t:
                t.copy_(out)

    def merge(self, other: FeatureStats) -> None:
        """Add the statistics of ``other`` (same feature dimension) into this accumulator."""
        if other.dim != self.dim:
            raise ValueError(f"FeatureStats.merge: dimensions differ ({self.dim} vs {other.dim})")
        for mine, theirs in zip(self.state_tensors(), other.state_tensors()):
            mine += theirs.to(mine.device)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu (D,), sigma (D, D)) as float64 numpy; sigma is the unbiased (ddof=1) covariance."""
        n = self.count.item()
        if n < 2:
            raise ValueError(
                f"FeatureStats.mean_cov: {n:.0f} samples; at least 2 are needed for a "
                "covariance (sample or load more images)"
            )
        s = self.sum.detach().cpu().numpy()
        ss = self.sum_outer.detach().cpu().numpy()
        mu = s / n
        sigma = (ss - n * np.outer(mu, mu)) / (n - 1)
        return mu, 0.5 * (sigma + sigma.T)
