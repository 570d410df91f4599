"""2-D Gaussian mixtures with exact (noise-perturbed) scores, for the NCSN toy experiment.

The paper's mixture (NCSN Sec. 3.2, Fig. 3): p = 1/5 N((-5,-5), I) + 4/5 N((5,5), I).
Perturbing a mixture of isotropic Gaussians with N(0, sigma^2 I) gives another mixture with
variances s_k^2 + sigma^2, so its score is known in closed form:

    grad log p_sigma(x) = sum_k r_k(x) * (mu_k - x) / (s_k^2 + sigma^2),
    r_k(x) = softmax_k( log w_k + log N(x; mu_k, (s_k^2 + sigma^2) I) ).
"""

from __future__ import annotations

import torch


class GaussianMixture:
    def __init__(self, means, stds, weights):
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, D)
        self.stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)  # (K,)
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if self.means.dim() != 2 or len(self.stds) != len(self.means) or len(w) != len(self.means):
            raise ValueError("means (K, D), stds (K,) and weights (K,) must agree")
        if (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError(f"mixture weights {w.tolist()} must be >= 0 and sum to 1")
        self.weights = w

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[k] + self.stds[k, None] * z

    def _log_resp(self, x: torch.Tensor, sigma: float):
        var = self.stds**2 + sigma**2  # (K,)
        diff = x[:, None, :] - self.means[None]  # (N, K, D)
        logn = -0.5 * (diff**2).sum(-1) / var - 0.5 * self.dim * torch.log(2 * torch.pi * var)
        return torch.log(self.weights) + logn, diff, var

    def log_prob(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """log p_sigma(x) for x (N, D)."""
        logits, _, _ = self._log_resp(x.double(), sigma)
        return torch.logsumexp(logits, dim=1)

    def score(self, x: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """Exact score of the mixture perturbed by N(0, sigma^2 I), same dtype as ``x``."""
        logits, diff, var = self._log_resp(x.double(), sigma)
        r = torch.softmax(logits, dim=1)  # (N, K)
        return (-(r[..., None] * diff / var[None, :, None]).sum(1)).to(x.dtype)

    def score_fn(self, sigmas: torch.Tensor):
        """A ``score(x, level_index)`` function for the samplers, exact at every level; like a
        sigma-continuous network (``score.continuous``) it also takes a floating tensor of sigmas."""
        sig = sigmas.to(torch.float64)

        def score(x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
            if torch.is_floating_point(level_index):  # sigma values
                sigma = level_index.to(torch.float64)
                if bool((sigma == sigma[0]).all()):
                    return self.score(x, float(sigma[0]))
                return torch.stack([self.score(x[k : k + 1], float(s))[0] for k, s in enumerate(sigma.tolist())])
            levels = torch.unique(level_index)
            out = torch.empty_like(x)
            for i in levels.tolist():
                m = level_index == i
                out[m] = self.score(x[m], float(sig[i]))
            return out

        score.continuous = True  # type: ignore[attr-defined]
        return score

    def mode_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Fraction of points ``x`` closest to each component mean (the paper's Fig. 3 measure)."""
        d = torch.cdist(x.double(), self.means)
        counts = torch.bincount(d.argmin(1), minlength=len(self.means)).double()
        return counts / max(len(x), 1)


def paper_mixture() -> GaussianMixture:
    """1/5 N((-5,-5), I) + 4/5 N((5,5), I)."""
    return GaussianMixture([[-5.0, -5.0], [5.0, 5.0]], [1.0, 1.0], [0.2, 0.8])
