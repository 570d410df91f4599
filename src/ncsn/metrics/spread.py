"""How far one run's sample quality is known: KID with its spread over subsets, and a bootstrap
interval for the FID. Both take the generated features the FID metric (``fid.FID``) keeps.

KID (Binkowski et al. 2018, "Demystifying MMD GANs") on the FID's own features: torchmetrics'
``KernelInceptionDistance`` (unbiased MMD^2 with the cubic polynomial kernel
k(x, y) = (x.y / D + 1)^3; mean and std over ``kid_subsets`` random subsets of ``kid_subset_size``
real and generated features each, drawn from a fixed seed, so a score is reproducible). It needs
real features, not only (mu, sigma): those of the first ``kid_real_images`` images of the real
split, cached beside the statistics (also when the FID statistics come from a user's
``stats_path``). The generated features are kept (float32, N x D) until ``reset`` and gathered
across DDP ranks inside ``compute()``. Its std is over subsets of these samples: the spread of the
estimator at that subset size, not a standard error of the mean.

A 95% interval for one run's FID (``ci_bootstraps`` > 0): a bootstrap over the generated
features (N rows drawn with replacement, the real statistics held fixed, fixed seed). A resample
holds duplicates, which biases its FID upwards (1,000 Gaussian features, D = 128: FID 8.4, the
resamples 12.5 to 13.4), so the raw percentiles need not contain the estimate; the interval is
the resamples' 2.5% and 97.5% quantiles measured from their median and placed around the
observed FID: [FID - (median - q2.5), FID + (q97.5 - median)]. It is the sampling noise of FID
at this N (compare runs at the same N: FID's own bias depends on N), not that of the real
statistics nor of training (seeds). Cost: one Fréchet distance per resample (a D x D covariance
and eigendecomposition), paid inside ``compute``: negligible for the digits classifier's
features; for Inception's D = 2048 each is a large non-symmetric eigenproblem (slow on a small
CPU: the inception config leaves it off).
"""

from __future__ import annotations

import torch
from torchmetrics.image.fid import _compute_fid
from torchmetrics.image.kid import KernelInceptionDistance


def kid_score(kid: KernelInceptionDistance, fake: torch.Tensor, subset_size: int | None, seed: int):
    """(KID, its std over subsets, subset size) of ``fake`` (N, D) against the real features ``kid``
    holds (``reset_real_features=False``). ``subset_size`` None: min(1000, N, real)."""
    n_fake, n_real = len(fake), sum(len(f) for f in kid.real_features)
    size = subset_size
    if size is None:
        size = min(1000, n_fake, n_real)
    elif size > min(n_fake, n_real):
        raise ValueError(
            f"fid.kid_subset_size={size} is invalid here: {n_fake} generated images and {n_real} real "
            f"features (set it <= {min(n_fake, n_real)}, or null)"
        )
    kid.subset_size = size
    kid.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # its subsets come from torch's global generator
        torch.manual_seed(seed)
        mean, std = kid.compute()
    kid.reset()  # the generated side only
    return float(mean), float(std), size


def bootstrap_fid_interval(
    fake: torch.Tensor, mu_real, cov_real, estimate: float, bootstraps: int, seed: int, level: float = 0.95
):
    """(low, high): a ``level`` interval for the FID of ``fake`` (N, D) against fixed real
    statistics (mu (D,), cov (D, D)) from ``bootstraps`` resamples: the resamples' quantiles
    around their median, placed around ``estimate`` (the FID of ``fake`` itself)."""
    fake = fake.double()
    mu_r, cov_r = (torch.as_tensor(a, dtype=torch.float64, device=fake.device) for a in (mu_real, cov_real))
    g = torch.Generator().manual_seed(seed)
    n, values = len(fake), []
    for _ in range(bootstraps):
        f = fake[torch.randint(0, n, (n,), generator=g).to(fake.device)]
        centred = f - f.mean(0)
        values.append(float(_compute_fid(mu_r, cov_r, f.mean(0), centred.t().mm(centred) / (n - 1))))
    q = torch.tensor([(1 - level) / 2, 0.5, (1 + level) / 2], dtype=torch.float64)
    lo, mid, hi = torch.tensor(values, dtype=torch.float64).quantile(q).tolist()
    return estimate - (mid - lo), estimate + (hi - mid)
