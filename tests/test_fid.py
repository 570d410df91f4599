"""FID: torchmetrics' FrechetInceptionDistance with our real statistics (cross-checked against a
scipy reference and against torchmetrics' own real-image path), the stats cache, the classifier
extractor on digits (values unchanged by the move to torchmetrics), and the offline Inception
weights."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from omegaconf import OmegaConf
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from ncsn.data.digits import load_digits_arrays
from ncsn.metrics import (
    FID,
    FIDWeightsMissing,
    StatsFileError,
    build_classifier_backend,
    build_fid,
    check_inception_weights,
    classifier_cache_path,
    load_or_compute_real_stats,
    load_stats_npz,
    real_stats_path,
    save_stats_npz,
)
from ncsn.metrics import inception as inception_mod
from ncsn.metrics.inception import WEIGHTS_FILE, WEIGHTS_URL, to_uint8

CONF = Path(__file__).resolve().parents[1] / "conf"


class Flatten(nn.Module):
    """Pixels as features: a cheap custom extractor to test FID's plumbing."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, images):
        return images.flatten(1).to(torch.float64)


def flatten_fid(dim: int) -> FID:
    return FID(Flatten(dim), "flatten-test")


def _never():
    raise AssertionError("must not be called: the cache should have been used")


def scipy_fid(f1: np.ndarray, f2: np.ndarray) -> float:
    """The reference formula (TTUR / pytorch-fid): ddof=1 covariances and scipy's sqrtm."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


# -- the metric object: torchmetrics, fed with our statistics ------------------------------------


def test_fid_is_torchmetrics_and_matches_the_scipy_reference():
    rng = np.random.default_rng(1)
    real = torch.from_numpy(rng.uniform(0, 1, (300, 1, 4, 4)))
    fake = torch.from_numpy(rng.beta(2, 3, (200, 1, 4, 4)))
    fid = flatten_fid(16)
    assert isinstance(fid, FrechetInceptionDistance) and isinstance(fid, nn.Module)
    fid.update(real, real=True)
    fid.update(fake)
    expected = scipy_fid(real.flatten(1).numpy(), fake.flatten(1).numpy())
    assert fid.compute() == pytest.approx(expected, rel=1e-8)


def test_loaded_statistics_give_the_same_fid_as_torchmetrics_real_images():
    """Own code (real mean/covariance loaded into the states) vs torchmetrics' path (the real
    images given to ``update(real=True)``): the same FID on the same features."""
    rng = np.random.default_rng(2)
    real = torch.from_numpy(rng.standard_normal((500, 1, 3, 3)) * 0.2 + 0.5)
    fake = torch.from_numpy(rng.standard_normal((120, 1, 3, 3)) * 0.3 + 0.4)
    own, theirs = flatten_fid(9), flatten_fid(9)
    theirs.update(real, real=True)
    f = real.flatten(1).numpy()
    own.set_real_stats(f.mean(0), np.cov(f, rowvar=False))
    np.testing.assert_allclose(own.real_mu, theirs.real_mu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(own.real_sigma, theirs.real_sigma, rtol=1e-10, atol=1e-14)
    for m in (own, theirs):
        m.update(fake)
    assert own.compute() == pytest.approx(theirs.compute(), rel=1e-10)
    # reset forgets the generated images only; fresh() shares the extractor and the real side
    own.reset()
    assert own.num_fake == 0 and own.real_mu == pytest.approx(f.mean(0))
    other = own.fresh()
    assert other.inception is own.inception and other.num_fake == 0
    assert other.score([real]) == pytest.approx(0.0, abs=1e-9)
    shifted = [other.score([real + s]) for s in (0.05, 0.2)]
    assert 0 < shifted[0] < shifted[1]
    with pytest.raises(ValueError, match="at least 2"):
        own.compute()
    with pytest.raises(ValueError, match="D=9"):
        own.set_real_stats(np.zeros(4), np.eye(4))


# -- real statistics: cache and user files ------------------------------------------------------


def test_real_stats_cache_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    real = torch.from_numpy(rng.uniform(0, 1, (50, 1, 2, 2))).float()
    fid = flatten_fid(4)
    calls = []

    def batches():
        calls.append(1)
        return iter(real.split(16))

    mu, sigma = load_or_compute_real_stats(fid, tmp_path, "toyimg", "train", 2, batches)
    path = real_stats_path(tmp_path, "toyimg", "train", 2, fid.name)
    assert path.is_file() and calls == [1]
    with np.load(path) as f:  # the TTUR / pytorch-fid format
        assert {"mu", "sigma"} <= set(f.files) and int(f["n"]) == 50
        np.testing.assert_array_equal(f["mu"], mu)
    mu2, sigma2 = load_or_compute_real_stats(fid, tmp_path, "toyimg", "train", 2, _never)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    # the key includes split and backend: another split is computed anew
    load_or_compute_real_stats(fid, tmp_path, "toyimg", "val", 2, batches)
    assert calls == [1, 1]
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temporary file


def test_user_stats_npz_used_and_validated(tmp_path):
    fid = flatten_fid(3)
    good = tmp_path / "fid_stats_user.npz"
    np.savez(good, mu=np.arange(3.0), sigma=np.eye(3))  # only mu and sigma, like TTUR's files
    mu, sigma = load_or_compute_real_stats(fid, tmp_path, "x", "train", 2, _never, stats_path=good)
    np.testing.assert_array_equal(mu, np.arange(3.0))
    assert not (tmp_path / "fid").exists()  # nothing computed or cached

    bad_keys = tmp_path / "bad_keys.npz"
    np.savez(bad_keys, m=np.zeros(3), s=np.eye(3))
    wrong_dim = tmp_path / "wrong_dim.npz"
    save_stats_npz(wrong_dim, np.zeros(4), np.eye(4), 10, "other")
    not_npz = tmp_path / "not.npz"
    not_npz.write_text("hello")
    for path, msg in (
        (bad_keys, "missing"),
        (wrong_dim, "D=3"),
        (not_npz, "not a readable"),
        (tmp_path / "absent.npz", "does not exist"),
    ):
        with pytest.raises(StatsFileError, match=msg) as e:
            load_stats_npz(path, 3)
        assert str(path) in str(e.value) and "fid.stats_path" in str(e.value)


# -- classifier backend on digits ---------------------------------------------------------------

EPOCHS = 8  # ~2-3 s on one core; the config uses 20


@pytest.fixture(scope="module")
def digits_backend(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, build_classifier_backend(
        cache, "digits", 8, seed=0, epochs=EPOCHS, load_train_arrays=load_digits_arrays
    )


def test_classifier_accurate_cached_and_deterministic(digits_backend, tmp_path):
    cache, backend = digits_backend
    assert backend.test_accuracy > 0.9
    path = classifier_cache_path(cache, "digits", 8, 0, EPOCHS)
    assert path == cache / "fid" / f"classifier-digits-8-s0-e{EPOCHS}-v1.pt"
    blob = torch.load(path, weights_only=True)
    assert blob["meta"]["test_accuracy"] == pytest.approx(backend.test_accuracy)
    x = torch.from_numpy(load_digits_arrays()[0][:64])
    f = backend(x)
    assert f.shape == (64, 128) and f.dtype == torch.float64

    # second build: from disk (the training data is never loaded), same features and name
    again = build_classifier_backend(cache, "digits", 8, seed=0, epochs=EPOCHS, load_train_arrays=_never)
    assert again.name == backend.name
    torch.testing.assert_close(again(x), f, rtol=0, atol=0)
    # trained afresh from the same seed: the same weights
    fresh = build_classifier_backend(tmp_path, "digits", 8, seed=0, epochs=EPOCHS, load_train_arrays=load_digits_arrays)
    assert fresh.name == backend.name and fresh.test_accuracy == backend.test_accuracy
    torch.testing.assert_close(fresh(x), f)


def test_build_fid_classifier_digits(digits_backend):
    cache, backend = digits_backend
    x, _ = load_digits_arrays()
    real = torch.from_numpy(x)
    fid = build_fid(
        "classifier",
        cache,
        "digits",
        "train",
        8,
        lambda: iter(real.split(500)),
        batch_size=1000,
        classifier_seed=0,
        classifier_epochs=EPOCHS,
        load_train_arrays=_never,
    )
    assert fid.name == backend.name
    assert fid.score(real.split(300)) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    noisy = [fid.score([(real + s * torch.randn(real.shape, generator=g)).clamp(0, 1)]) for s in (0.1, 0.3)]
    assert 0.0 < noisy[0] < noisy[1]
    # statistics are cached: a second build neither trains nor reads the data
    fid2 = build_fid(
        "classifier",
        cache,
        "digits",
        "train",
        8,
        _never,
        batch_size=1000,
        classifier_seed=0,
        classifier_epochs=EPOCHS,
        load_train_arrays=_never,
    )
    np.testing.assert_array_equal(fid2.real_sigma, fid.real_sigma)


#: FID values of the digits classifier path (classifier seed 0, 3 epochs; uniform noise images,
#: generator seed 0, drawn in this order) recorded with the implementation before torchmetrics
#: (own streaming sums and an eigh-based Fréchet distance)
def _frechet(mu1, s1, mu2, s2) -> float:
    """The reference formula from statistics (TTUR / pytorch-fid: scipy's sqrtm)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def test_digits_classifier_fid_matches_the_scipy_reference_on_its_own_features(tmp_path):
    """Two paths in one process (never a recording: the classifier's weights and features differ
    in the last bits between CPUs): the digits-classifier FID of random images equals the scipy
    formula on the same classifier features and the cached training statistics."""
    from ncsn.data.digits import DigitsDataModule
    from ncsn.workflow.evaluation import build_fid_for

    fid_cfg = OmegaConf.create(
        {
            "backend": "classifier",
            "stats_path": None,
            "cache_dir": str(tmp_path),
            "batch_size": 100,
            "classifier_seed": 0,
            "classifier_epochs": 3,
        }
    )
    fid = build_fid_for(fid_cfg, DigitsDataModule(num_val=64, batch_size=64))
    mu_r, s_r = fid.real_stats()
    g = torch.Generator().manual_seed(0)
    values = []
    for n in (16, 90, 500):
        images = torch.rand(n, 1, 8, 8, generator=g)
        fid.reset()
        fid.update(images)
        feats = fid.features(images).numpy()
        expected = _frechet(mu_r, s_r, feats.mean(0), np.cov(feats, rowvar=False))
        values.append(fid.compute())
        assert values[-1] == pytest.approx(expected, rel=1e-6)
    assert all(v > 100 for v in values), values  # uniform noise is far from digits


def test_build_fid_arguments():
    assert build_fid("none", "unused", "toy", "train", 2, _never) is None
    with pytest.raises(ValueError, match="fid.backend='inceptoin'"):
        build_fid("inceptoin", "c", "d", "train", 8, _never)
    with pytest.raises(ValueError, match="classifier_seed"):
        build_fid("inception", "c", "d", "train", 8, _never, classifier_seed=0)
    with pytest.raises(ValueError, match="weights_path"):
        build_fid("classifier", "c", "d", "train", 8, _never, weights_path="w.pth")


def test_fid_configs_are_build_fid_arguments():
    """Every key of conf/fid/*.yaml is a build_fid parameter (so every key is read by code)."""
    params = set(inspect.signature(build_fid).parameters)
    for name in ("inception", "classifier", "none"):
        cfg = OmegaConf.to_container(OmegaConf.load(CONF / "fid" / f"{name}.yaml"))
        assert cfg["backend"] == name
        assert set(cfg) <= params, f"conf/fid/{name}.yaml: {set(cfg) - params}"
    for name, n in (("fast", 1000), ("paper", 50000)):
        cfg = OmegaConf.to_container(OmegaConf.load(CONF / "eval" / f"{name}.yaml"))
        assert set(cfg) == {"n_samples", "denoise_both", "save_npz"}  # chunks: sampler.batch_size, fid.batch_size
        assert cfg["n_samples"] == n


# -- Inception: offline weights check and preprocessing -----------------------------------------


def test_missing_inception_weights_error_is_fast_and_actionable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected_dir = tmp_path / "torch_home" / "hub" / "checkpoints"

    def no_network(*args, **kwargs):
        raise AssertionError("check_inception_weights tried the network")

    # fast because it only looks at the file system: no connection, no download
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(FIDWeightsMissing) as e:
        check_inception_weights(None)
    msg = str(e.value)
    for part in (WEIGHTS_FILE, WEIGHTS_URL, str(expected_dir), "fid.weights_path"):
        assert part in msg, part
    # an explicit path that does not exist is named, with the same fix
    missing = tmp_path / "nowhere" / WEIGHTS_FILE
    with pytest.raises(FIDWeightsMissing, match="fid.weights_path") as e:
        check_inception_weights(missing)
    assert str(missing) in str(e.value) and WEIGHTS_URL in str(e.value)
    # a truncated download is refused
    expected_dir.mkdir(parents=True)
    (expected_dir / WEIGHTS_FILE).write_bytes(b"<html>")
    with pytest.raises(FIDWeightsMissing, match="failed download"):
        check_inception_weights(None)
    # build_fid stops before touching the data
    (expected_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(FIDWeightsMissing):
        build_fid("inception", tmp_path, "cifar10", "train", 32, _never)


def test_weights_url_is_torch_fidelitys():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert WEIGHTS_URL == URL_INCEPTION_V3


def test_to_uint8_rounds_like_saved_png():
    k = torch.arange(256, dtype=torch.float32)
    assert torch.equal(to_uint8((k / 255).view(1, 1, 16, 16)).flatten(), k.to(torch.uint8))
    x = torch.tensor([-0.5, 1.7, float("nan"), 0.5 / 255, 0.49 / 255])
    assert to_uint8(x).tolist() == [0, 255, 0, 1, 0]


def test_inception_fid_runs_offline_from_hub_cache(tmp_path, monkeypatch):
    """With a (random-weights) file in the hub cache, torchmetrics' InceptionV3 loads it (no
    download) and gives 2048-d features of uint8 pixels; grayscale is repeated to RGB."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    from ncsn.metrics.fid import INCEPTION_NAME

    cls = tfi.FeatureExtractorInceptionV3
    with monkeypatch.context() as m:  # make a state dict of the right layout without any download
        m.setattr(cls, "load_state_dict", lambda self, state_dict, strict=True: None)
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        state = cls("x", ["2048"]).state_dict()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = tmp_path / "hub" / "checkpoints" / WEIGHTS_FILE
    target.parent.mkdir(parents=True)
    torch.save(state, target)
    monkeypatch.setattr(tfi, "load_state_dict_from_url", _never)
    assert check_inception_weights(None) == target and isinstance(inception_mod.WEIGHTS_FILE, str)
    fid = FID(None, INCEPTION_NAME, weights_path=target, batch_size=1)
    assert not fid.inception.use_antialias  # the TensorFlow-FID resize
    f = fid.features(torch.rand(2, 1, 8, 8))
    assert f.shape == (2, 2048) and torch.isfinite(f).all()
    fid.update(torch.rand(3, 3, 8, 8), real=True)
    fid.update(torch.rand(2, 1, 8, 8))
    assert fid.num_real == 3 and fid.num_fake == 2


# -- KID beside FID: torchmetrics' KernelInceptionDistance on the same features ---------------------


def _kid_fid(real: torch.Tensor, **kw) -> FID:
    fid = FID(Flatten(real.shape[1] * real.shape[2] * real.shape[3]), "flatten-test", **kw)
    feats = real.flatten(1).double()
    fid.set_real_stats(feats.mean(0).numpy(), np.cov(feats.numpy(), rowvar=False))
    fid.set_real_features(feats.float())
    return fid


def test_kid_is_near_zero_for_the_same_features_and_positive_for_shifted_ones():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 1, 2, 2, generator=g) * 2  # spread features: the cubic kernel sees their shape
    fid = _kid_fid(real, kid_subsets=50, kid_subset_size=200)
    kids = {}
    for name, fake in (
        ("same", real[:400]),  # the real features themselves
        ("independent", torch.randn(400, 1, 2, 2, generator=g) * 2),  # the same distribution
        ("shifted", torch.randn(400, 1, 2, 2, generator=g) * 2 + 1),
        ("collapsed", torch.zeros(400, 1, 2, 2)),  # the real mean: a mode collapse
    ):
        fid.reset()
        fid.update(fake)
        kids[name] = fid.scores("fid/denoised")
        assert set(kids[name]) == {"fid/denoised", "kid/denoised", "kid_std/denoised"}
        assert fid.kid_scores[2] == 200
    for name in ("same", "independent"):  # unbiased MMD^2: zero within its spread over subsets
        assert abs(kids[name]["kid/denoised"]) < 2 * kids[name]["kid_std/denoised"], kids[name]
    for name in ("shifted", "collapsed"):
        assert kids[name]["kid/denoised"] > 3 * kids[name]["kid_std/denoised"], kids[name]
    # the FID is what torchmetrics' FID gives (KID changes nothing there); KID is reproducible
    ref = FrechetInceptionDistance(feature=Flatten(4), normalize=True)
    ref.update(real, real=True)
    ref.update(torch.zeros(400, 1, 2, 2), real=False)
    assert kids["collapsed"]["fid/denoised"] == pytest.approx(float(ref.compute()), rel=1e-6)
    assert fid.scores("fid/denoised") == kids["collapsed"]
    fresh = fid.fresh()
    assert fresh.kid_scores is None and fresh.num_real_features == 1000 and fresh.num_fake == 0


def test_kid_subset_size_is_honoured_or_refused():
    real = torch.rand(50, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    fid = _kid_fid(real, kid_subsets=5, kid_subset_size=20)
    fid.update(real[:30])
    fid.compute()
    assert fid.kid_scores[2] == 20
    fid.reset()
    fid.update(real[:10])
    with pytest.raises(ValueError, match="fid.kid_subset_size=20 is invalid here: 10 generated images"):
        fid.compute()
    with pytest.raises(ValueError, match="fid.kid_subset_size=1"):
        FID(Flatten(4), "x", kid_subset_size=1)


@pytest.mark.slow
def test_kid_in_the_results_of_training_and_sample_py_mode_fid(tmp_path):
    import json

    from conftest import TINY_DIGITS, run_cli

    run_dir = tmp_path / "run"
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    res = run_cli(
        "train.py", *TINY_DIGITS, "fid.classifier_epochs=2", "eval.n_samples=20", cache, f"hydra.run.dir={run_dir}"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    trained = json.loads((run_dir / "results.json").read_text())
    assert trained["kid_std"] >= 0 and np.isfinite(trained["kid"])  # the callback's last evaluation
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "fid"
    res = run_cli(
        "sample.py", f"ckpt_path={ckpt}", "device=cpu", "mode=fid", "eval.n_samples=20", cache, f"hydra.run.dir={out}"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert np.isfinite(results["kid"]) and results["kid_std"] >= 0 and np.isfinite(results["fid"])
    assert results["fid_ci_low"] < results["fid"] < results["fid_ci_high"]  # fid=classifier: ci_bootstraps 200


def test_fid_bootstrap_interval_holds_the_fid_and_narrows_with_more_samples():
    g = torch.Generator().manual_seed(2)
    real = torch.rand(2000, 1, 4, 4, generator=g)  # D = 16: resamples' duplicates bias their FID up
    widths = {}
    for n in (100, 1600):
        fid = _kid_fid(real, kid_subsets=2, ci_bootstraps=200)
        fid.update(torch.rand(n, 1, 4, 4, generator=g) * 0.9 + 0.05)
        out = fid.scores()
        assert out["fid_ci_low"] < out["fid"] < out["fid_ci_high"]
        widths[n] = out["fid_ci_high"] - out["fid_ci_low"]
        assert fid.scores() == out  # fixed seed: the same interval again
    assert widths[1600] < widths[100] / 2  # ~1/sqrt(N): 16x the samples, ~4x narrower
    fid.reset()
    assert fid.fid_ci is None
    with pytest.raises(ValueError, match="fid.ci_bootstraps=-1"):
        FID(Flatten(4), "x", ci_bootstraps=-1)


def test_loading_or_training_the_classifier_leaves_the_global_random_stream_alone(tmp_path):
    """A run draws the same training noise whether its FID classifier was cached or not: neither
    path consumes the global torch, NumPy or Python generators."""
    import random

    from ncsn.metrics.classifier import build_classifier_backend

    for _ in ("train and cache", "load"):
        torch.manual_seed(123)
        np.random.seed(123)
        random.seed(123)
        build_classifier_backend(tmp_path, "digits", 8, 0, 1, load_digits_arrays)
        after = (torch.rand(3), np.random.rand(3), random.random())
        torch.manual_seed(123)
        np.random.seed(123)
        random.seed(123)
        expected = (torch.rand(3), np.random.rand(3), random.random())
        assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]
