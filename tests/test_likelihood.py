"""Bits/dim by the probability-flow ODE (ncsn.metrics.likelihood) against closed forms.

Gaussian data N(mu, C) has the exact score -(C + sigma^2 I)^-1 (x - mu) at every sigma (the
smoothed density is N(mu, C + sigma^2 I)), so log p_{sigma_min}(x) is known exactly.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from ncsn.metrics.likelihood import bits_per_dim, check_continuous, dequantize, image_bpd, ode_log_likelihood
from ncsn.nets.base import ScoreNet
from ncsn.sampling.seeds import SampleNoise, phi

SMIN, SMAX = 0.01, 20.0


class Gaussian:
    """N(mu, C) in D dims with C = Q diag(lam) Q^T (a full covariance: Rademacher probes are not exact)."""

    def __init__(self, dims: int, mu: float = 0.3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dims, dims, generator=g, dtype=torch.float64))
        self.q, self.lam, self.mu = q, 0.01 + 0.09 * torch.rand(dims, generator=g, dtype=torch.float64), mu

    def sample(self, n: int, sigma: float, seed: int = 1) -> torch.Tensor:
        z = torch.randn(n, len(self.lam), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return self.mu + (z * (self.lam + sigma**2).sqrt()) @ self.q.T

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        inv = 1.0 / (self.lam[None, :] + sigma.to(torch.float64).view(-1, 1) ** 2)  # (N, D)
        return -(((x - self.mu) @ self.q) * inv) @ self.q.T

    def logp(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        var = self.lam + sigma**2
        proj = (x - self.mu) @ self.q
        return -0.5 * (len(var) * math.log(2 * math.pi) + var.log().sum() + (proj**2 / var).sum(1))


def test_exact_trace_matches_the_closed_form_and_converges_at_second_order():
    gauss = Gaussian(8, mu=0.0)  # centred: the prior N(0, sigma_max^2 I) is exact up to lam / sigma_max^2
    x = gauss.sample(200, SMIN)
    exact = gauss.logp(x, SMIN)
    errs = {}
    for n in (100, 200):
        res = ode_log_likelihood(gauss.score, x, SMIN, SMAX, n, eps=None)
        assert res.nfe == 2 * (n - 1)
        errs[n] = (res.logp - exact).abs()
    # tight: per image within 0.02 nats at 200 Heun steps (8 dims)
    assert errs[200].max() < 0.02, errs[200].max()
    # Heun is second order: doubling the steps divides the error by about 4
    ratio = float(errs[100].mean() / errs[200].mean())
    assert 3.0 < ratio < 5.0, ratio


def test_hutchinson_is_unbiased_within_its_standard_error():
    gauss = Gaussian(8, seed=3)
    x = gauss.sample(400, SMIN, seed=4)
    eps = torch.where(torch.randn(x.shape, generator=torch.Generator().manual_seed(5)) >= 0, 1.0, -1.0).double()
    hutch = ode_log_likelihood(gauss.score, x, SMIN, SMAX, 100, eps=eps).logp
    exact_trace = ode_log_likelihood(gauss.score, x, SMIN, SMAX, 100, eps=None).logp
    analytic = gauss.logp(x, SMIN)
    noise = hutch - exact_trace  # the estimator's own error, image by image
    se = float(noise.std() / math.sqrt(len(noise)))
    assert se > 1e-3  # a full covariance: the Rademacher probe is noisy (a test that can fail)
    assert abs(float(noise.mean())) < 4 * se
    # against the closed form (mu != 0: the prior's per-image error averages out): within 4 standard
    # errors plus the solver's error (< 0.05 nats at 100 steps)
    err = hutch - analytic
    assert abs(float(err.mean())) < 4 * float(err.std() / math.sqrt(len(err))) + 0.05


class GaussianNet(ScoreNet):
    """A sigma-continuous 'network' whose score is the exact one of Gaussian pixels N(mu, s^2 I)."""

    continuous = True

    def __init__(self, mu: float = 0.5, s: float = 0.25):
        super().__init__(torch.tensor([100.0, 1.0, SMIN]))  # sigma_max >> the pixels' spread
        self.mu, self.s = mu, s

    def forward(self, x, cond):
        _, sigma = self.noise_level(cond)
        return -(x - self.mu) / (self.s**2 + sigma.view(-1, 1, 1, 1) ** 2)


def test_image_bpd_is_the_closed_form_of_the_dequantized_images_and_batch_independent():
    net, levels = GaussianNet(), 17
    images = torch.randint(0, levels, (6, 1, 4, 4), generator=torch.Generator().manual_seed(0)) / (levels - 1)
    bpd, res = image_bpd(net, images, torch.arange(6), seed=7, levels=levels, num_steps=200, estimator="exact")
    # the closed form at the same dequantized images (image r's first draw of SampleNoise(seed, r))
    u = phi(SampleNoise(7, torch.arange(6)).normal((1, 4, 4))).clamp(max=1 - 2**-24)
    y = dequantize(images, levels, u).double()
    var = net.s**2 + SMIN**2
    logp = -0.5 * (16 * math.log(2 * math.pi * var) + ((y - net.mu) ** 2).flatten(1).sum(1) / var)
    assert torch.allclose(bpd, bits_per_dim(logp, 16, levels), atol=4e-3), (bpd, bits_per_dim(logp, 16, levels))
    assert torch.all((y - images) ** 2 < 1 / levels**2)  # dequantization moves a pixel by < 1 level
    assert 0.5 < float(res.prior_fit.mean()) < 1.5
    # per-image noise: image 4 alone gets the same dequantization and probe as in the batch
    h6, _ = image_bpd(net, images, torch.arange(6), seed=7, levels=levels, num_steps=20)
    h1, _ = image_bpd(net, images[4:5], torch.tensor([4]), seed=7, levels=levels, num_steps=20)
    assert torch.allclose(h1, h6[4:5], atol=1e-5)
    other, _ = image_bpd(net, images[4:5], torch.tensor([4]), seed=8, levels=levels, num_steps=20)
    assert not torch.allclose(other, h1, atol=1e-5)  # another seed, another dequantization


def test_level_conditioned_networks_are_refused():
    from ncsn.nets.mlp import ConditionalMLP

    net = ConditionalMLP(torch.tensor([1.0, 0.5, 0.1]), dim=2, hidden=8, conditioning="level")
    with pytest.raises(ValueError, match="conditioned on its 3 training levels"):
        image_bpd(net, torch.zeros(1, 2), torch.arange(1), 0, 256, 10)
    check_continuous(ConditionalMLP(torch.tensor([1.0, 0.5, 0.1]), dim=2, hidden=8, conditioning="sigma"))


@pytest.mark.slow
def test_sample_py_mode_nll_writes_bpd_and_refuses_level_conditioned_nets(tmp_path):
    from conftest import TINY_DIGITS, run_cli

    ckpts = {}
    for cond in ("sigma", "level"):
        run_dir = tmp_path / cond
        res = run_cli(
            "train.py",
            *TINY_DIGITS,
            f"model.conditioning={cond}",
            "fid=none",
            "callbacks.best=null",
            f"hydra.run.dir={run_dir}",
        )
        assert res.returncode == 0, res.stderr[-3000:]
        ckpts[cond] = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "nll"
    args = ["mode=nll", "device=cpu", "nll.n_images=5", "nll.batch_size=2", "nll.num_steps=4"]
    res = run_cli("sample.py", f"ckpt_path={ckpts['sigma']}", f"hydra.run.dir={out}", *args)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert math.isfinite(results["bpd"]) and results["bpd_se"] > 0
    assert results["nll/n_images"] == 5 and results["nfe"] == 6 and results["nll/split"] == "val"
    res = run_cli("sample.py", f"ckpt_path={ckpts['level']}", f"hydra.run.dir={tmp_path / 'refused'}", *args)
    assert res.returncode == 2 and "needs a sigma-continuous network" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "refused" / "results.json").exists()
    res = run_cli(
        "sample.py",
        f"ckpt_path={ckpts['sigma']}",
        f"hydra.run.dir={tmp_path / 'bad'}",
        "mode=nll",
        "nll.estimator=gauss",
    )
    assert res.returncode == 2 and "nll.estimator='gauss'" in res.stderr, res.stderr[-2000:]
