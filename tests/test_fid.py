"""FID: the Fréchet distance, streaming statistics (and their DDP property), the stats cache,
the classifier backend on digits, and the offline Inception weights check."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from omegaconf import OmegaConf

from ncsn.data.digits import load_digits_arrays
from ncsn.metrics import (
    FID,
    FeatureStats,
    FIDBackend,
    FIDWeightsMissing,
    StatsFileError,
    build_classifier_backend,
    build_fid,
    check_inception_weights,
    classifier_cache_path,
    frechet_distance,
    load_or_compute_real_stats,
    load_stats_npz,
    real_stats_path,
    save_stats_npz,
)
from ncsn.metrics import inception as inception_mod
from ncsn.metrics.inception import WEIGHTS_FILE, WEIGHTS_URL, InceptionBackend, to_uint8

CONF = Path(__file__).resolve().parents[1] / "conf"


class FlattenBackend(FIDBackend):
    """Pixels as features: a cheap backend to test FID's plumbing."""

    name = "flatten-test"

    def __init__(self, dim: int):
        self.feature_dim = dim
        self._device = torch.device("cpu")

    @property
    def device(self):
        return self._device

    def to(self, device):
        self._device = torch.device(device)
        return self

    def features(self, images):
        return images.flatten(1).to(self._device, torch.float64)


def _random_spd(rng, d):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _never():
    raise AssertionError("must not be called: the cache should have been used")


# -- Fréchet distance ---------------------------------------------------------------------------


def test_frechet_closed_form_diagonal_and_rotated():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # The distance is invariant under a common rotation: covariances no longer diagonal.
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    got = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-8)
    # torch tensors are accepted too
    got_t = frechet_distance(torch.tensor(mu1), torch.tensor(np.diag(a)), torch.tensor(mu2), torch.tensor(np.diag(b)))
    assert got_t == pytest.approx(expected, rel=1e-10)


def test_frechet_matches_scipy_sqrtm_on_general_covariances():
    rng = np.random.default_rng(1)
    d = 24
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # Singular covariances (fewer samples than dimensions): finite, >= 0, zero against itself.
    x = rng.standard_normal((5, d))
    s = np.cov(x, rowvar=False)
    assert frechet_distance(x.mean(0), s, x.mean(0), s) == pytest.approx(0.0, abs=1e-8)
    assert np.isfinite(frechet_distance(x.mean(0), s, mu2, s2))


def test_frechet_rejects_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="sigma2 has shape"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([np.nan, 0.0]), np.eye(2))


# -- streaming statistics ---------------------------------------------------------------------


def test_feature_stats_equal_numpy_mean_and_cov():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((101, 7)) * 3.0 + 5.0
    acc = FeatureStats(7)
    for chunk in np.array_split(x, [3, 40, 41, 90]):  # uneven batches, one of size 1
        acc.update(torch.from_numpy(chunk).float())
    mu, sigma = acc.mean_cov()
    xf = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(mu, xf.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(xf, rowvar=False, ddof=1), rtol=1e-10, atol=1e-10)
    assert acc.n == 101 and acc.sum.dtype == torch.float64
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats(7).mean_cov()


def test_split_accumulators_summed_equal_one_accumulator():
    """The DDP property: per-rank sums, added element-wise, are the statistics of all images."""
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((60, 5)))
    whole = FeatureStats(5)
    whole.update(x)
    rank0, rank1 = FeatureStats(5), FeatureStats(5)
    rank0.update(x[:23])
    rank1.update(x[23:])
    # (a) an all-reduce that returns the reduced tensor (like Lightning's strategy.reduce)
    others = {id(t): o.clone() for t, o in zip(rank0.state_tensors(), rank1.state_tensors())}
    rank0.all_reduce(lambda t: t + others[id(t)])
    for a, b in zip(rank0.state_tensors(), whole.state_tensors()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # (b) in place on the exposed tensors (like torch.distributed.all_reduce), and merge
    rank2, rank3 = FeatureStats(5), FeatureStats(5)
    rank2.update(x[:7])
    rank3.update(x[7:])
    for t, o in zip(rank2.state_tensors(), rank3.state_tensors()):
        t += o
    np.testing.assert_allclose(rank2.mean_cov()[1], whole.mean_cov()[1], rtol=1e-12)
    rank4 = FeatureStats(5)
    rank4.update(x[:30])
    rest = FeatureStats(5)
    rest.update(x[30:])
    rank4.merge(rest)
    np.testing.assert_allclose(rank4.mean_cov()[0], whole.mean_cov()[0], rtol=1e-12)


def test_fid_object_self_zero_shift_larger_and_ddp_sum():
    rng = np.random.default_rng(4)
    real = torch.from_numpy(rng.uniform(0, 1, (400, 1, 2, 2))).float()
    backend = FlattenBackend(4)
    mu, sigma, n = _stats(backend, real)
    fid = FID(backend, mu, sigma)
    assert fid.score(real.split(64)) == pytest.approx(0.0, abs=1e-9)
    shifted = [fid.score([(real + s).clamp(0, 1)]) for s in (0.05, 0.2)]
    assert 0 < shifted[0] < shifted[1]
    # reset + two "ranks" summed through state_tensors() = one pass over all images
    fid.reset()
    assert fid.num_fake == 0
    other = FID(backend, mu, sigma)
    fid.update(real[:150])
    other.update(real[150:])
    for t, o in zip(fid.state_tensors(), other.state_tensors()):
        t += o
    assert fid.num_fake == 400
    assert fid.compute() == pytest.approx(0.0, abs=1e-9)
    assert not isinstance(fid, torch.nn.Module)  # kept out of the LightningModule's state_dict


def _stats(backend, images):
    from ncsn.metrics.stats import compute_stats

    return compute_stats(backend, images.split(100))


# -- real statistics: cache and user files ------------------------------------------------------


def test_real_stats_cache_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    real = torch.from_numpy(rng.uniform(0, 1, (50, 1, 2, 2))).float()
    backend = FlattenBackend(4)
    calls = []

    def batches():
        calls.append(1)
        return iter(real.split(16))

    mu, sigma = load_or_compute_real_stats(backend, tmp_path, "toyimg", "train", 2, batches)
    path = real_stats_path(tmp_path, "toyimg", "train", 2, backend.name)
    assert path.is_file() and calls == [1]
    with np.load(path) as f:  # the TTUR / pytorch-fid format
        assert {"mu", "sigma"} <= set(f.files) and int(f["n"]) == 50
        np.testing.assert_array_equal(f["mu"], mu)
    mu2, sigma2 = load_or_compute_real_stats(backend, tmp_path, "toyimg", "train", 2, _never)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    # the key includes split and backend: another split is computed anew
    load_or_compute_real_stats(backend, tmp_path, "toyimg", "val", 2, batches)
    assert calls == [1, 1]
    assert not list(tmp_path.rglob("*.tmp*"))  # atomic writes leave no temporary file


def test_user_stats_npz_used_and_validated(tmp_path):
    backend = FlattenBackend(3)
    good = tmp_path / "fid_stats_user.npz"
    np.savez(good, mu=np.arange(3.0), sigma=np.eye(3))  # only mu and sigma, like TTUR's files
    mu, sigma = load_or_compute_real_stats(backend, tmp_path, "x", "train", 2, _never, stats_path=good)
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
    f = backend.features(x)
    assert f.shape == (64, 128) and f.dtype == torch.float64

    # second build: from disk (the training data is never loaded), same features and name
    again = build_classifier_backend(cache, "digits", 8, seed=0, epochs=EPOCHS, load_train_arrays=_never)
    assert again.name == backend.name
    torch.testing.assert_close(again.features(x), f, rtol=0, atol=0)
    # trained afresh from the same seed: the same weights
    fresh = build_classifier_backend(tmp_path, "digits", 8, seed=0, epochs=EPOCHS, load_train_arrays=load_digits_arrays)
    assert fresh.name == backend.name and fresh.test_accuracy == backend.test_accuracy
    torch.testing.assert_close(fresh.features(x), f)


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
        assert set(cfg) == {"n_samples", "batch_size", "denoise_both", "save_npz"}
        assert cfg["n_samples"] == n


# -- Inception: offline weights check and preprocessing -----------------------------------------


def test_missing_inception_weights_error_is_fast_and_actionable(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected_dir = tmp_path / "torch_home" / "hub" / "checkpoints"
    t = time.perf_counter()
    with pytest.raises(FIDWeightsMissing) as e:
        check_inception_weights(None)
    assert time.perf_counter() - t < 1.0
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


def test_inception_backend_runs_offline_from_hub_cache(tmp_path, monkeypatch):
    """With a (random-weights) file in the hub cache, the backend loads it and gives 2048-d features."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

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
    backend = InceptionBackend(weights_path=None, batch_size=1)
    assert backend.weights_path == target and isinstance(inception_mod.WEIGHTS_FILE, str)
    f = backend.features(torch.rand(2, 1, 8, 8))  # grayscale is repeated to RGB
    assert f.shape == (2, 2048) and f.dtype == torch.float64 and torch.isfinite(f).all()
