"""FID of generated images against fixed real statistics, and the one builder every caller uses.

``FID`` is a plain object, not an ``nn.Module`` or torchmetrics ``Metric``: keep it outside the
LightningModule so it is in no state_dict, checkpoint or EMA copy. Under DDP each rank updates
its own accumulator; sum ``state_tensors()`` across ranks (or ``all_reduce(fn)``) before
``compute()``, which then gives the FID of all ranks' images on every rank.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
import torch

from .backend import FIDBackend
from .classifier import build_classifier_backend
from .frechet import FeatureStats, frechet_distance
from .inception import InceptionBackend
from .stats import load_or_compute_real_stats

BACKENDS = ("inception", "classifier", "none")


class FID:
    """Fréchet distance between a feature extractor's statistics of fake images and real ones."""

    def __init__(self, backend: FIDBackend, real_mu: np.ndarray, real_sigma: np.ndarray):
        d = backend.feature_dim
        if np.shape(real_mu) != (d,) or np.shape(real_sigma) != (d, d):
            raise ValueError(
                f"FID: real statistics mu {np.shape(real_mu)} / sigma "
                f"{np.shape(real_sigma)} do not match backend {backend.name} (D={d})"
            )
        self.backend = backend
        self.real_mu = np.asarray(real_mu, dtype=np.float64)
        self.real_sigma = np.asarray(real_sigma, dtype=np.float64)
        self.fake = FeatureStats(d, backend.device)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def num_fake(self) -> int:
        return self.fake.n

    def to(self, device: torch.device | str) -> FID:
        """Move the extractor and the fake-image accumulator (e.g. to the LightningModule's device)."""
        self.backend.to(device)
        self.fake.to(device)
        return self

    def reset(self) -> None:
        """Forget the fake images seen so far (the real statistics stay)."""
        self.fake.reset()

    @torch.no_grad()
    def update(self, images: torch.Tensor) -> None:
        """Add generated images (N, C, H, W) in [0, 1] (clamped; NaN -> 0)."""
        self.fake.update(self.backend.features(images))

    def state_tensors(self) -> list[torch.Tensor]:
        """The accumulator's tensors [count, sum, sum_outer] (float64): all-reduce them with SUM."""
        return self.fake.state_tensors()

    def all_reduce(self, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> None:
        """Sum the accumulator across ranks with ``fn`` (see ``FeatureStats.all_reduce``)."""
        self.fake.all_reduce(fn)

    def fake_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the fake images so far, e.g. to save with ``save_stats_npz``."""
        return self.fake.mean_cov()

    def compute(self) -> float:
        """FID of the images seen since the last ``reset`` (needs at least 2)."""
        mu, sigma = self.fake.mean_cov()
        return frechet_distance(mu, sigma, self.real_mu, self.real_sigma)

    def score(self, batches: Iterable[torch.Tensor]) -> float:
        """``reset``, ``update`` with every batch, ``compute`` (single process)."""
        self.reset()
        for x in batches:
            self.update(x)
        return self.compute()


def build_fid(
    backend: str,
    cache_dir: str | os.PathLike,
    dataset: str,
    split: str,
    image_size: int,
    real_batches: Callable[[], Iterable[torch.Tensor]],
    stats_path: str | os.PathLike | None = None,
    weights_path: str | os.PathLike | None = None,
    batch_size: int = 200,
    classifier_seed: int | None = None,
    classifier_epochs: int | None = None,
    load_train_arrays: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    device: torch.device | str = "cpu",
) -> FID | None:
    """Build the FID metric from the ``fid`` config group plus what the data module knows.

    Config keys (conf/fid/*.yaml): ``backend`` ("inception" | "classifier" | "none": returns
    None), ``cache_dir``, ``stats_path`` (a user .npz with mu/sigma, or None to compute and
    cache), ``batch_size`` (images per extractor forward), ``weights_path`` (inception only),
    ``classifier_seed`` and ``classifier_epochs`` (classifier only).

    From the caller: ``dataset`` / ``split`` / ``image_size`` (cache keys), ``real_batches()``
    (un-augmented batches in [0, 1]; called only when the statistics are not cached),
    ``load_train_arrays()`` (classifier only; called only when the classifier is not cached),
    and ``device`` (where the extractor runs; the classifier also trains there).
    Computing the statistics or training the classifier happens here, so under DDP call this on
    rank 0 first (the other ranks then load the cached files).
    """
    if backend not in BACKENDS:
        raise ValueError(f"fid.backend={backend!r}: expected one of {BACKENDS}")
    if backend == "none":
        return None
    if backend != "inception" and weights_path is not None:
        raise ValueError(
            f"fid.weights_path={weights_path!r} is only used by fid.backend=inception, not {backend!r}; remove it"
        )
    if backend != "classifier" and (classifier_seed is not None or classifier_epochs is not None):
        raise ValueError(
            f"fid.classifier_seed / fid.classifier_epochs are only used by "
            f"fid.backend=classifier, not {backend!r}; remove them"
        )
    if backend == "inception":
        extractor: FIDBackend = InceptionBackend(weights_path=weights_path, batch_size=batch_size, device=device)
    else:
        if classifier_seed is None or classifier_epochs is None or load_train_arrays is None:
            raise ValueError(
                "fid.backend=classifier needs fid.classifier_seed, "
                "fid.classifier_epochs and the data's load_train_arrays"
            )
        extractor = build_classifier_backend(
            cache_dir,
            dataset,
            image_size,
            seed=classifier_seed,
            epochs=classifier_epochs,
            load_train_arrays=load_train_arrays,
            batch_size=batch_size,
            device=device,
        )
    mu, sigma = load_or_compute_real_stats(
        extractor, cache_dir, dataset, split, image_size, real_batches, stats_path=stats_path
    )
    return FID(extractor, mu, sigma)
