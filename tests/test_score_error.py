"""The score-error diagnostic (ncsn.metrics.score_error, sample.py mode=score_error): the exact score
of the Gaussian-smoothed training set against closed forms and autograd, the DSM loss in the
repository's weighting, the floor and the score error; the mode on a tiny digits checkpoint."""

import csv
import json
import math

import pytest
import torch
from conftest import TINY_DIGITS, run_cli
from omegaconf import OmegaConf

from ncsn.core.losses import dsm_loss
from ncsn.data.digits import DigitsDataModule
from ncsn.metrics.score_error import (
    fair_sigma,
    nearest_distance,
    posterior_mean,
    score_error_by_sigma,
    smoothed_score,
)
from ncsn.nets.small_conv import SmallConvScoreNet
from ncsn.sampling import Annealed, Sampler
from ncsn.workflow.config import ConfigError
from ncsn.workflow.sample_modes import ModeContext, run_score_error


def _log_density(x, train, sigma):  # log p_sigma up to a constant, for autograd
    d2 = ((x[:, None] - train[None]) ** 2).flatten(2).sum(2)
    return torch.logsumexp(-d2 / (2 * sigma**2), dim=1)


def test_one_training_point_gives_the_gaussian_score_even_far_away():
    x1 = torch.tensor([[0.3, -1.0, 2.0]])
    x = torch.tensor([[0.0, 0.0, 0.0], [40.0, -30.0, 5.0]])  # the second: logits ~ -1e7 at sigma 0.1
    for sigma in (0.1, 1.0, 7.0):
        s = smoothed_score(x, x1, sigma)
        torch.testing.assert_close(s, (x1.double() - x.double()) / sigma**2, rtol=1e-12, atol=1e-9)
    _, n_eff = posterior_mean(x, x1, 0.1)
    torch.testing.assert_close(n_eff, torch.ones(2, dtype=torch.float64))


def test_two_training_points_match_the_hand_formula():
    a, b = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([-1.0, 0.5], dtype=torch.float64)
    x = torch.tensor([[0.2, 0.1], [0.0, 0.25], [3.0, -2.0]], dtype=torch.float64)
    sigma = 0.7
    w_a = torch.sigmoid((((x - b) ** 2).sum(1) - ((x - a) ** 2).sum(1)) / (2 * sigma**2))[:, None]
    expected = (w_a * a + (1 - w_a) * b - x) / sigma**2
    torch.testing.assert_close(smoothed_score(x, torch.stack([a, b]), sigma), expected, rtol=1e-10, atol=1e-12)
    # the point (0, 0.25) is equidistant from a and b: two images count equally
    _, n_eff = posterior_mean(x[1:2], torch.stack([a, b]), sigma)
    assert abs(float(n_eff) - 2.0) < 1e-9


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_chunked_score_equals_the_gradient_of_the_log_density(chunk):
    g = torch.Generator().manual_seed(0)
    train = torch.rand(50, 1, 3, 3, generator=g, dtype=torch.float64)
    x = torch.rand(6, 1, 3, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    sigma = torch.tensor([0.05, 0.1, 0.2, 0.4, 0.8, 1.6], dtype=torch.float64)  # one per point
    (grad,) = torch.autograd.grad(_log_density(x, train, sigma.view(-1, 1)).sum(), x)
    s = smoothed_score(x.detach(), train, sigma, chunk=chunk)
    assert s.shape == x.shape and s.dtype == torch.float64
    torch.testing.assert_close(s, grad, rtol=1e-9, atol=1e-9)


def test_nearest_distance_and_fair_sigma():
    train = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    held = torch.tensor([[1.0, 0.0], [10.0, 2.0], [0.0, 13.0]])
    torch.testing.assert_close(nearest_distance(held, train, chunk=2), torch.tensor([1.0, 2.0, 3.0]).double())
    assert fair_sigma(held, train) == 2.0


def _data(n_train=40, n_held=12, shape=(1, 4, 4)):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n_train, *shape, generator=g), torch.rand(n_held, *shape, generator=g)


def test_the_exact_score_as_the_network_has_zero_error_and_its_loss_is_the_floor():
    train, held = _data()
    sigmas = torch.tensor([1.0, 0.3, 0.05])
    rows = score_error_by_sigma(
        lambda x, k: smoothed_score(x, train, float(sigmas[k])).float(),
        train,
        held,
        sigmas,
        n_noise=3,
        generator=torch.Generator().manual_seed(0),
        batch_size=5,
    )
    assert [r["n"] for r in rows] == [36, 36, 36] and len(rows) == len(sigmas)
    for r in rows:
        assert math.isclose(r["loss"], r["floor"], rel_tol=1e-5)
        assert r["score_error"] < 1e-6 * r["floor"] and r["rel_score_error"] < 1e-6
        assert 1 <= r["n_eff"] <= len(train)


def test_a_zero_network_has_relative_error_one_and_the_noise_as_loss():
    train, held = _data()
    sigmas, power = torch.tensor([0.5, 0.1]), 2.0
    gen = torch.Generator().manual_seed(0)
    rows = score_error_by_sigma(lambda x, k: torch.zeros_like(x), train, held, sigmas, power, 50, gen)
    for r in rows:
        assert math.isclose(r["rel_score_error"], 1.0, rel_tol=1e-9)
        # loss = 1/2 sigma^2 E|z / sigma|^2 = D / 2 = 8 (600 draws of 16 dims: ~2% standard error)
        assert abs(r["loss"] - 8.0) < 0.8
        assert r["score_error"] > 0 and r["floor"] > 0


@pytest.mark.parametrize("power", [2.0, 1.0])
def test_the_network_loss_is_the_repositorys_dsm_loss_on_the_same_draws(power):
    train, held = _data()
    sigmas = torch.tensor([1.0, 0.2, 0.04])

    def net(x, cond):  # any deterministic score function of (x, level index)
        return -(x - 0.5) * (1.0 + cond.float().view(-1, 1, 1, 1)) * 3.0

    for k in range(len(sigmas)):
        (row,) = score_error_by_sigma(
            lambda x, _, k=k: net(x, torch.full((len(x),), k)),
            train,
            held,
            sigmas[k : k + 1],
            power,
            generator=torch.Generator().manual_seed(5),
        )
        ref = dsm_loss(
            net, held, sigmas, power, generator=torch.Generator().manual_seed(5), level_index=torch.full((12,), k)
        )
        assert math.isclose(row["loss"], float(ref.loss), rel_tol=1e-5)


def _ctx(tmp_path, net, **score_error):
    dm = DigitsDataModule(num_val=8)
    cfg = OmegaConf.create({"seed": 0, "score_error": {"n_images": 6, "n_noise": 2, "num_sigmas": None, **score_error}})
    train_cfg = OmegaConf.create({"loss": {"anneal_power": 2.0}})
    return ModeContext(cfg, train_cfg, net.eval(), dm, Sampler(Annealed(), batch_size=4), tmp_path, "cpu")


def test_mode_writes_one_row_per_level_or_grid_sigma(tmp_path):
    sigmas = torch.tensor([1.0, 0.3, 0.1, 0.03])
    torch.manual_seed(0)
    level_net = SmallConvScoreNet(sigmas, ngf=8, num_blocks=1)
    res = run_score_error(_ctx(tmp_path, level_net))
    rows = list(csv.DictReader((tmp_path / "score_error.csv").open()))
    assert [float(r["sigma"]) for r in rows] == pytest.approx(sigmas.tolist())
    assert [r["level"] for r in rows] == ["0", "1", "2", "3"] and (tmp_path / "score_error.png").stat().st_size > 0
    assert res["score_error/n_images"] == 6 and res["score_error/n_train"] == 1797 - 8
    assert [r["fair"] for r in rows] == [str(float(r["sigma"]) >= res["score_error/fair_sigma"]) for r in rows]
    assert all(int(r["n"]) == 12 for r in rows)
    # a level-conditioned net cannot be evaluated between its levels: refused, naming the key
    with pytest.raises(ConfigError, match=r"score_error.num_sigmas=3 is invalid"):
        run_score_error(_ctx(tmp_path, level_net, num_sigmas=3))
    cont = SmallConvScoreNet(sigmas, ngf=8, num_blocks=1, conditioning="sigma")
    run_score_error(_ctx(tmp_path, cont, num_sigmas=3))
    rows = list(csv.DictReader((tmp_path / "score_error.csv").open()))
    assert [float(r["sigma"]) for r in rows] == pytest.approx([1.0, 0.03**0.5, 0.03], rel=1e-6)
    assert all(r["level"] == "" for r in rows)


@pytest.mark.slow
def test_sample_py_mode_score_error_on_a_tiny_digits_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY_DIGITS if not o.startswith("callbacks.samples")]
    res = run_cli(
        "train.py", *overrides, "fid=none", "callbacks.best=null", "callbacks.samples=null", f"hydra.run.dir={run_dir}"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt, out = run_dir / "checkpoints" / "last.ckpt", tmp_path / "se"
    common = [f"ckpt_path={ckpt}", "device=cpu", "mode=score_error", f"hydra.run.dir={out}"]
    res = run_cli("sample.py", *common, "score_error.n_images=16", "score_error.n_noise=1")
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "score_error" and results["score_error/n_images"] == 16
    rows = list(csv.DictReader((out / "score_error.csv").open()))
    assert len(rows) == 10 and all(math.isfinite(float(r["loss"])) and float(r["floor"]) > 0 for r in rows)
    assert (out / "score_error.png").is_file()
    bad = run_cli("sample.py", *common, "score_error.n_noise=0")
    assert bad.returncode == 2 and "score_error.n_noise=0" in bad.stderr + bad.stdout
