"""EDM preconditioning as a score network (ncsn.nets.precond), EDM's loss weight and the truncated
log-normal sigma distribution (ncsn.core.losses), and the refusal of bad values of their keys."""

import math

import pytest
import torch
from conftest import ROOT
from hydra import compose, initialize_config_dir

from ncsn.core.losses import dsm_loss
from ncsn.nets.base import ScoreNet
from ncsn.nets.precond import EDMPrecond
from ncsn.nets.small_conv import SmallConvScoreNet
from ncsn.workflow.entry import EXIT_BAD_INPUT, run_entry
from ncsn.workflow.train import train

SIGMAS = torch.tensor([5.0, 1.0, 0.2, 0.01], dtype=torch.float64)


class LinearF(ScoreNet):
    """F(y; sigma) = a y + b ln(sigma): linear in its input, sigma-continuous, no division by sigma."""

    continuous = True

    def __init__(self, a: float, b: float):
        super().__init__(SIGMAS, scale_by_sigma=False)
        self.a, self.b = a, b
        self.seen = []  # (input, sigma) of each call

    def forward(self, y, cond):
        _, sigma = self.noise_level(cond)
        self.seen.append((y, sigma))
        return self.a * y + self.b * torch.log(sigma).view(-1, *([1] * (y.dim() - 1)))


def closed_form_score(x, sigma, a, b, sd):
    """(D - x) / sigma^2 with D = c_skip x + c_out F(c_in x), EDM Table 1, written out directly."""
    s = sigma.view(-1, 1, 1, 1)
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / torch.sqrt(s**2 + sd**2)
    c_in = 1 / torch.sqrt(s**2 + sd**2)
    d = c_skip * x + c_out * (a * c_in * x + b * torch.log(s))
    return (d - x) / s**2, d


def test_preconditioned_score_is_the_denoisers_score_in_closed_form():
    torch.manual_seed(0)
    sd, a, b = 0.4, 0.7, -0.3
    net = EDMPrecond(LinearF(a, b), sigma_data=sd).double()
    x = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    sigma = torch.tensor([4.0, 0.9, 0.05, 0.01], dtype=torch.float64)
    expected, _ = closed_form_score(x, sigma, a, b, sd)
    torch.testing.assert_close(net(x, sigma), expected, rtol=1e-10, atol=1e-8)
    # the inner net sees c_in x and sigma itself (its own ln-sigma embedding is the c_noise)
    y, seen_sigma = net.net.seen[-1]
    torch.testing.assert_close(y, x / torch.sqrt(sigma**2 + sd**2).view(-1, 1, 1, 1))
    torch.testing.assert_close(seen_sigma, sigma)
    # level indices read the training levels (the float32 buffer); at_sigma broadcasts one sigma
    levels = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(net(x, levels), closed_form_score(x, net.sigmas, a, b, sd)[0], rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(
        net.at_sigma(x, 0.3), closed_form_score(x, torch.full((4,), 0.3, dtype=torch.float64), a, b, sd)[0]
    )


def test_float32_score_has_no_cancellation_at_the_smallest_sigma():
    torch.manual_seed(1)
    sd, a, b = 0.5, 0.9, 0.1
    x = torch.rand(8, 1, 8, 8, dtype=torch.float64)
    sigma = torch.full((8,), 0.002, dtype=torch.float64)
    expected, _ = closed_form_score(x, sigma, a, b, sd)
    got = EDMPrecond(LinearF(a, b), sigma_data=sd)(x.float(), sigma.float()).double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-3 * float(expected.abs().max()))


def test_edm_weighted_dsm_is_edms_denoiser_loss():
    """1/2 sigma^2 (1 + sigma^2 / sigma_data^2) ||s + z / sigma||^2 = 1/2 (1 / c_out^2) ||D - x||^2."""
    torch.manual_seed(2)
    sd, a, b = 0.5, 0.6, 0.2
    net = EDMPrecond(LinearF(a, b), sigma_data=sd).double()
    x = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    levels, sig = torch.tensor([0, 1, 2, 3]), net.sigmas  # the loss and the net read the same levels
    out = dsm_loss(net, x, sig, generator=torch.Generator().manual_seed(5), level_index=levels, sigma_data=sd)
    z = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    s = sig.view(-1, 1, 1, 1)
    _, d = closed_form_score(x + s * z, sig, a, b, sd)
    c_out2 = (s * sd) ** 2 / (s**2 + sd**2)
    edm = 0.5 * ((d - x) ** 2 / c_out2).flatten(1).sum(1)
    torch.testing.assert_close(out.per_example, edm, rtol=1e-9, atol=0)
    # the papers' sigma^2 weighting differs from it by sigma_data^2 / (sigma^2 + sigma_data^2)
    plain = dsm_loss(net, x, sig, generator=torch.Generator().manual_seed(5), level_index=levels)
    torch.testing.assert_close(plain.per_example, edm * sd**2 / (sig**2 + sd**2), rtol=1e-9, atol=0)


def _log_sigmas(sigmas, n, lognormal, seed=0):
    x = torch.zeros(n, 1)
    out = dsm_loss(
        lambda y, s: torch.zeros_like(y),
        x,
        sigmas,
        generator=torch.Generator().manual_seed(seed),
        continuous=True,
        lognormal=lognormal,
    )
    return torch.log(out.sigma.double())


def test_lognormal_sigma_moments():
    n = 200_000
    # a range much wider than N(-1.2, 1.2^2): the truncation is invisible, EDM's moments
    wide = _log_sigmas(torch.tensor([1e6, 1e-6]), n, (-1.2, 1.2))
    assert abs(float(wide.mean()) + 1.2) < 4 * 1.2 / math.sqrt(n)
    assert abs(float(wide.std()) - 1.2) < 0.01
    # the digits' range [0.01, 4.8]: inside it, with the truncated normal's mean and variance
    lo, hi = math.log(0.01), math.log(4.8)
    ls = _log_sigmas(torch.tensor([4.8, 0.01]), n, (-1.2, 1.2), seed=1)
    assert float(ls.min()) >= lo - 1e-6 and float(ls.max()) <= hi + 1e-6
    al, be = (lo + 1.2) / 1.2, (hi + 1.2) / 1.2
    pdf = [math.exp(-(t**2) / 2) / math.sqrt(2 * math.pi) for t in (al, be)]
    mass = 0.5 * (math.erf(be / math.sqrt(2)) - math.erf(al / math.sqrt(2)))
    mean = -1.2 + 1.2 * (pdf[0] - pdf[1]) / mass
    var = 1.44 * (1 + (al * pdf[0] - be * pdf[1]) / mass - ((pdf[0] - pdf[1]) / mass) ** 2)
    assert abs(float(ls.mean()) - mean) < 4 * math.sqrt(var / n)
    assert abs(float(ls.var()) - var) < 0.02 * var
    # and not the log-uniform draw of sigma_sampling=continuous (mean (lo + hi) / 2, var (hi - lo)^2 / 12)
    uni = _log_sigmas(torch.tensor([4.8, 0.01]), n, None, seed=1)
    assert abs(float(uni.mean()) - (lo + hi) / 2) < 0.02 and abs(float(uni.var()) - (hi - lo) ** 2 / 12) < 0.05


def test_small_conv_with_edm_trains_a_step():
    torch.manual_seed(3)
    inner = SmallConvScoreNet(SIGMAS.float(), ngf=8, num_blocks=1, scale_by_sigma=False, conditioning="sigma")
    net = EDMPrecond(inner, sigma_data=0.5)
    x = torch.rand(6, 1, 8, 8)
    out = dsm_loss(net, x, net.sigmas, continuous=True, lognormal=(-1.2, 1.2), sigma_data=0.5)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(p.grad is not None for p in inner.parameters())
    assert torch.equal(net.sigmas, inner.sigmas)


BAD = [
    (["model.precond=karras"], "model.precond='karras' is invalid: must be none or edm"),
    (["model.sigma_data=0"], "model.sigma_data=0 is invalid: must be a number > 0"),
    (["loss.sigma_sampling=gaussian"], "loss.sigma_sampling='gaussian' is invalid"),
    (["loss.sigma_sampling=lognormal"], "loss.sigma_sampling='lognormal' is invalid for this model"),
    (["loss.lognormal_std=0"], "loss.lognormal_std=0 is invalid: must be a number > 0"),
    (["loss.weighting=snr"], "loss.weighting='snr' is invalid: must be power or edm"),
    (["loss.weighting=edm"], "loss.weighting='edm' is invalid for this model: it needs model.precond=edm"),
    (["model.precond=edm", "model.conditioning=sigma"], "model.precond='edm' needs model.scale_by_sigma=false"),
    (["model.precond=edm", "model.scale_by_sigma=false"], "model.precond='edm' is invalid for SmallConvScoreNet"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_values_of_the_new_keys_are_refused_in_one_line(overrides, message, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        # the level-conditioned small conv net of experiment=digits_ncsn (the default run is already EDM's)
        cfg = compose(
            "train", overrides=["experiment=digits_ncsn", *overrides, f"paths.run_dir={run_dir}", "logger=csv"]
        )
    assert run_entry(train, cfg) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not run_dir.exists() or not any(run_dir.iterdir())


def test_the_config_keys_build_the_wrapper_and_the_default_is_the_bare_net():
    from ncsn.workflow.build import build_net, build_sigmas

    edm = ["model.conditioning=sigma", "model.precond=edm", "model.scale_by_sigma=false", "model.sigma_data=0.48"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg, default = (
            compose("train", overrides=["experiment=digits_ncsn", *edm]),
            compose("train", ["experiment=digits_ncsn"]),
        )
    net = build_net(cfg.model, build_sigmas(cfg))
    assert isinstance(net, EDMPrecond) and net.sigma_data == 0.48 and isinstance(net.net, SmallConvScoreNet)
    assert not net.net.scale_by_sigma and net.net.conditioning == "sigma"
    bare = build_net(default.model, build_sigmas(default))
    assert type(bare) is SmallConvScoreNet and bare.scale_by_sigma
