"""Real-data feature statistics: computed once, cached as .npz (keys ``mu``, ``sigma``).

The file format is the one TTUR and pytorch-fid use, so their published statistics (e.g.
TTUR's ``fid_stats_cifar10_train.npz``) can be given instead of computing ours. Cached files
also hold ``n`` (number of images) and ``backend`` (the feature extractor's name).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


class StatsFileError(ValueError):
    """A statistics .npz is unreadable or does not match the feature extractor."""


def real_stats_path(cache_dir: str | os.PathLike, dataset: str, split: str, image_size: int, backend_name: str) -> Path:
    """``<cache_dir>/fid/stats-<dataset>-<split>-<image_size>-<backend_name>.npz``."""
    for what, value in (("dataset", dataset), ("split", split), ("backend name", backend_name)):
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", value):
            raise ValueError(
                f"real_stats_path: {what} {value!r} must be made of letters, digits "
                "and _.- (it becomes part of a file name)"
            )
    return Path(cache_dir).expanduser() / "fid" / f"stats-{dataset}-{split}-{image_size}-{backend_name}.npz"


def save_stats_npz(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, n: int, backend_name: str) -> Path:
    """Write ``mu``, ``sigma`` (float64), ``n`` and ``backend`` atomically (tmp file, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
    np.savez(
        tmp,
        mu=np.asarray(mu, np.float64),
        sigma=np.asarray(sigma, np.float64),
        n=np.int64(n),
        backend=np.str_(backend_name),
    )
    os.replace(tmp, path)
    return path


def load_stats_npz(
    path: str | os.PathLike, feature_dim: int, config_key: str = "fid.stats_path"
) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate (mu (D,), sigma (D, D)) float64 from ``path``; D must be ``feature_dim``.

    Errors raise ``StatsFileError`` naming the file and ``config_key``.
    """
    path = Path(path).expanduser()
    hint = f"(set by {config_key}; give a .npz with keys 'mu' (D,) and 'sigma' (D, D), D={feature_dim})"
    if not path.is_file():
        raise StatsFileError(f"FID statistics file {path} does not exist {hint}")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"mu", "sigma"} <= keys:
                raise StatsFileError(
                    f"FID statistics file {path} has keys {sorted(keys)}, missing "
                    f"{sorted({'mu', 'sigma'} - keys)} {hint}"
                )
            mu = np.asarray(f["mu"], dtype=np.float64)
            sigma = np.asarray(f["sigma"], dtype=np.float64)
    except StatsFileError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/pickle/format errors all mean "not a stats file"
        raise StatsFileError(
            f"FID statistics file {path} is not a readable .npz ({type(e).__name__}: {e}) {hint}"
        ) from e
    if mu.shape != (feature_dim,) or sigma.shape != (feature_dim, feature_dim):
        raise StatsFileError(
            f"FID statistics file {path} has mu {mu.shape} and sigma {sigma.shape}, "
            f"but the feature extractor gives D={feature_dim} features {hint}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatsFileError(f"FID statistics file {path} contains NaN or inf {hint}")
    return mu, sigma


@torch.no_grad()
def compute_stats(fid, batches: Iterable[torch.Tensor]) -> tuple[np.ndarray, np.ndarray, int]:
    """(mu, sigma, n) of the metric's features over real image batches (N, C, H, W) in [0, 1]
    (given to ``fid.update(..., real=True)``; the metric keeps them as its real side)."""
    fid.reset_real()  # forget any real statistics loaded before
    for x in batches:
        fid.update(x, real=True)
    mu, sigma = fid.real_stats()
    return mu, sigma, fid.num_real


def real_features_path(cache_dir, dataset: str, split: str, image_size: int, backend_name: str, n: int) -> Path:
    """``<cache_dir>/fid/kid-features-<dataset>-<split>-<image_size>-<backend_name>-<n>.npz``."""
    stats = real_stats_path(cache_dir, dataset, split, image_size, backend_name)
    return stats.with_name(stats.stem.replace("stats-", "kid-features-", 1) + f"-{n}.npz")


@torch.no_grad()
def load_or_compute_real_features(
    fid,
    cache_dir: str | os.PathLike,
    dataset: str,
    split: str,
    image_size: int,
    real_batches: Callable[[], Iterable[torch.Tensor]],
    max_images: int,
) -> torch.Tensor:
    """Give ``fid`` the features (float32, N x D) of the first ``max_images`` real images for KID:
    from the cache (key ``features``), else computed from ``real_batches()`` and cached."""
    path = real_features_path(cache_dir, dataset, split, image_size, fid.name, max_images)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                feats = torch.from_numpy(np.asarray(f["features"], dtype=np.float32))
        except Exception as e:  # noqa: BLE001 - any unreadable file means "recompute"
            raise StatsFileError(f"KID feature cache {path} is unreadable ({e}): delete it to recompute") from e
    else:
        chunks, n = [], 0
        for x in real_batches():
            chunks.append(fid.features(x[: max_images - n]).float().cpu())
            n += len(chunks[-1])
            if n >= max_images:
                break
        feats = torch.cat(chunks)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
        np.savez(tmp, features=feats.numpy(), backend=np.str_(fid.name))
        os.replace(tmp, path)
        log.info("KID real features of %s/%s (%d images, %s) cached at %s", dataset, split, len(feats), fid.name, path)
    fid.set_real_features(feats)
    return feats


def load_or_compute_real_stats(
    fid,
    cache_dir: str | os.PathLike,
    dataset: str,
    split: str,
    image_size: int,
    real_batches: Callable[[], Iterable[torch.Tensor]],
    stats_path: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Give the metric ``fid`` (an ``ncsn.metrics.FID``) its real statistics: the user's
    ``stats_path`` if given, else the cache, else computed from ``real_batches()`` and cached.
    Returns them (mu, sigma).

    ``real_batches()`` returns an iterator of un-augmented image batches in [0, 1] (e.g.
    ``lambda: datamodule.iter_unaugmented("train")``); it is only called on a cache miss.
    """
    if stats_path is not None:
        mu, sigma = load_stats_npz(stats_path, fid.feature_dim, "fid.stats_path")
    else:
        path = real_stats_path(cache_dir, dataset, split, image_size, fid.name)
        if path.is_file():
            mu, sigma = load_stats_npz(path, fid.feature_dim, f"the FID cache (delete {path} to recompute)")
        else:
            mu, sigma, n = compute_stats(fid, real_batches())
            save_stats_npz(path, mu, sigma, n, fid.name)
            log.info("FID real statistics of %s/%s (%d images, %s) cached at %s", dataset, split, n, fid.name, path)
    # the metric always holds the statistics as loaded from the file (computed or not): one path
    fid.set_real_stats(mu, sigma)
    return mu, sigma
