"""FID of generated images against fixed real statistics, and the one builder every caller uses.

The metric object is torchmetrics' ``FrechetInceptionDistance``: its states (feature sums and
counts), its Fréchet distance and its DDP synchronisation (the states are summed across ranks
inside ``compute()``, so every rank must call ``compute()``). What torchmetrics has no
equivalent for is added here: the real side comes from cached or published statistics
(mean and covariance, the TTUR / pytorch-fid ``.npz``) loaded into its real-feature states,
and images are given as floats in [0, 1] and turned into what the extractor takes:

* Inception (RGB data): torchmetrics' own InceptionV3 (``feature=2048``) with torch-fidelity's
  TF-FID weights file (``feature_extractor_weights_path``, never downloaded here) and
  ``antialias=False`` (the TensorFlow-FID resize). Images become uint8 pixels the way a saved
  PNG sample is (``to_uint8``: ``floor(255 x + 0.5)``, the NCSN protocol) rather than
  torchmetrics' ``normalize=True`` truncation; grayscale is repeated to RGB.
* Classifier (digits, MNIST): a custom ``nn.Module`` feature extractor
  (``classifier.ClassifierFeatures``) that takes the float images.

KID and an interval for the FID, beside it: see ``spread``.

Keep the metric outside the LightningModule (the samples callback holds it), so it is in no
state_dict, checkpoint or EMA copy.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from .classifier import build_classifier_backend
from .inception import check_inception_weights, to_uint8
from .spread import bootstrap_fid_interval, kid_score
from .stats import load_or_compute_real_features, load_or_compute_real_stats

BACKENDS = ("inception", "classifier", "none")
INCEPTION_NAME = "inception2048-tf20151205"
_REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")
#: the count the loaded real statistics are stored with: only their mean and covariance enter
#: the FID; a power of two keeps ``sum / n`` exact
_REAL_COUNT = 2
#: the seed of KID's random subsets and of the FID bootstrap
KID_SEED = 0


def _same_on_every_rank(stacked: torch.Tensor) -> torch.Tensor:
    """DDP reduction of the real states: every rank loaded the same statistics, keep one copy."""
    return stacked[0]


def check_images(images: torch.Tensor, channels: tuple[int, ...], where: str) -> None:
    """Raise a ValueError naming ``where`` unless ``images`` is a float (N, C, H, W) batch."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{where}: expected a float tensor (N, C, H, W) of images in [0, 1], got {shape}")
    if images.shape[1] not in channels:
        raise ValueError(
            f"{where}: images have {images.shape[1]} channels, this extractor takes {' or '.join(map(str, channels))}"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"{where}: images have dtype {images.dtype}; pass floats in [0, 1] (divide uint8 images by 255)"
        )


class FID(FrechetInceptionDistance):
    """torchmetrics' FID with real statistics loaded from ``(mu, sigma)`` and float images in [0, 1].

    ``update(images)`` adds generated images (``real=True``: real ones, used to compute the
    statistics on a cache miss); ``reset()`` forgets the generated images only;
    ``compute()`` returns a float (and synchronises the states across DDP ranks).
    """

    def __init__(
        self,
        feature: nn.Module | None,
        name: str,
        weights_path: str | os.PathLike | None = None,
        batch_size: int = 200,
        kid_subsets: int = 100,
        kid_subset_size: int | None = None,
        ci_bootstraps: int = 0,
    ):
        """``feature``: a custom extractor (an ``nn.Module`` with ``num_features``, taking float
        images in [0, 1]); None: torchmetrics' InceptionV3 loaded from ``weights_path``.
        ``kid_subset_size``: None = min(1000, generated images, real features)."""
        if batch_size < 1:
            raise ValueError(f"fid.batch_size={batch_size}: must be >= 1")
        if not (isinstance(kid_subsets, int) and kid_subsets >= 1):
            raise ValueError(f"fid.kid_subsets={kid_subsets!r}: must be an integer >= 1")
        if kid_subset_size is not None and not (isinstance(kid_subset_size, int) and kid_subset_size >= 2):
            raise ValueError(f"fid.kid_subset_size={kid_subset_size!r}: must be null or an integer >= 2")
        if not (isinstance(ci_bootstraps, int) and ci_bootstraps >= 0):
            raise ValueError(f"fid.ci_bootstraps={ci_bootstraps!r}: must be an integer >= 0 (0: no interval)")
        if feature is None:
            super().__init__(
                feature=2048,
                reset_real_features=False,
                normalize=False,
                feature_extractor_weights_path=str(weights_path),
                antialias=False,
            )
        else:
            super().__init__(feature=feature, reset_real_features=False, normalize=True)
        for state in _REAL_STATES:
            self._reductions[state] = _same_on_every_rank
        self.name = name
        self.batch_size = batch_size
        self.weights_path = weights_path
        self.feature_dim = int(self.fake_features_sum.shape[0])
        self.add_state("fake_features", [], dist_reduce_fx="cat")
        self.kid_subset_size = kid_subset_size
        # KID on features given directly (identity extractor); the states synchronised by this metric
        with warnings.catch_warnings():  # its note that it keeps every feature: so it does, until ``reset``
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            self.kid = KernelInceptionDistance(
                feature=nn.Identity(), subsets=kid_subsets, reset_real_features=False, sync_on_compute=False
            )
        self.kid_scores: tuple[float, float, int] | None = None  # (kid, kid_std, subset size) of the last compute
        self.ci_bootstraps = ci_bootstraps
        self.fid_ci: tuple[float, float] | None = None  # the last compute's 95% bootstrap interval

    @property
    def device(self) -> torch.device:
        return self.fake_features_sum.device

    @property
    def num_fake(self) -> int:
        return int(self.fake_features_num_samples)

    @property
    def num_real(self) -> int:
        return int(self.real_features_num_samples)

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool = False) -> None:
        """Add images (N, C, H, W) floats in [0, 1] (clamped; NaN -> 0), ``batch_size`` at a time."""
        channels = (getattr(self.inception, "in_channels", images.shape[1]),) if self.used_custom_model else (1, 3)
        check_images(images, channels, f"FID({self.name}).update")
        for chunk in images.split(self.batch_size):
            x = chunk.to(self.device)
            if not self.used_custom_model:
                x = to_uint8(x)
                if x.shape[1] == 1:
                    x = x.expand(-1, 3, -1, -1)
                x = x.contiguous()
            self._add(self.inception(x), real)

    def _add(self, features: torch.Tensor, real: bool) -> None:
        """torchmetrics' FID update given the features (the same arithmetic), keeping generated ones for KID."""
        self.orig_dtype = features.dtype
        f = features.double()
        if f.dim() == 1:
            f = f.unsqueeze(0)
        side = "real" if real else "fake"
        setattr(self, f"{side}_features_sum", getattr(self, f"{side}_features_sum") + f.sum(dim=0))
        setattr(self, f"{side}_features_cov_sum", getattr(self, f"{side}_features_cov_sum") + f.t().mm(f))
        setattr(self, f"{side}_features_num_samples", getattr(self, f"{side}_features_num_samples") + f.shape[0])
        if not real:
            self.fake_features.append(f.float())  # type: ignore[union-attr, operator]  # a list state

    def reset(self) -> None:
        """Forget the generated images (and the last KID); the real side stays."""
        super().reset()
        self.kid_scores = self.fid_ci = None

    def set_real_features(self, features: torch.Tensor) -> None:
        """The real features (N, D) KID compares with (not part of the FID statistics)."""
        if features.ndim != 2 or features.shape[1] != self.feature_dim or len(features) < 2:
            raise ValueError(f"KID: real features of shape {tuple(features.shape)}; need (N >= 2, {self.feature_dim})")
        self.kid.real_features = []
        self.kid.update(features.to(self.device, torch.float32), real=True)

    @property
    def num_real_features(self) -> int:
        return sum(len(f) for f in self.kid.real_features)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The extractor's features (N, D) float64 of float images in [0, 1] (what ``update`` adds)."""
        with torch.no_grad():
            x = images.to(self.device)
            if not self.used_custom_model:
                x = to_uint8(x)
                x = (x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).contiguous()
            return self.inception(x).to(torch.float64)

    def set_real_stats(self, mu, sigma) -> None:
        """Load real statistics (mean (D,), unbiased covariance (D, D)) into the real states."""
        d = self.feature_dim
        if np.shape(mu) != (d,) or np.shape(sigma) != (d, d):
            raise ValueError(
                f"FID: real statistics mu {np.shape(mu)} / sigma {np.shape(sigma)} do not match "
                f"the feature extractor {self.name} (D={d})"
            )
        mu = torch.as_tensor(np.asarray(mu, dtype=np.float64), device=self.device)
        sigma = torch.as_tensor(np.asarray(sigma, dtype=np.float64), device=self.device)
        n = _REAL_COUNT
        self.real_features_num_samples = torch.tensor(n, dtype=torch.long, device=self.device)
        self.real_features_sum = mu * n
        self.real_features_cov_sum = sigma * (n - 1) + n * torch.outer(mu, mu)

    def reset_real(self) -> None:
        """Forget the real side (``reset`` keeps it)."""
        for state in _REAL_STATES:
            getattr(self, state).zero_()

    @staticmethod
    def _mean_cov(total: torch.Tensor, outer: torch.Tensor, count: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        n = int(count)
        if n < 2:
            raise ValueError(f"FID: {n} images; at least 2 are needed for a covariance (sample or load more images)")
        mu = (total / n).cpu().numpy()
        sigma = ((outer - n * torch.outer(total / n, total / n)) / (n - 1)).cpu().numpy()
        return mu, 0.5 * (sigma + sigma.T)

    def real_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) float64 of the real side (loaded, or of the real images given to ``update``)."""
        return self._mean_cov(self.real_features_sum, self.real_features_cov_sum, self.real_features_num_samples)

    def fake_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma) of the generated images so far (this rank's), e.g. to save with ``save_stats_npz``."""
        return self._mean_cov(self.fake_features_sum, self.fake_features_cov_sum, self.fake_features_num_samples)

    @property
    def real_mu(self) -> np.ndarray:
        return self.real_stats()[0]

    @property
    def real_sigma(self) -> np.ndarray:
        return self.real_stats()[1]

    def compute(self) -> float:  # type: ignore[override]  # a float, not torchmetrics' tensor
        """FID of the generated images since the last ``reset`` (all ranks' together; needs >= 2);
        also KID when real features are loaded (``kid_scores``)."""
        for side, count in (("generated", self.fake_features_num_samples), ("real", self.real_features_num_samples)):
            if int(count) < 2:
                raise ValueError(f"FID.compute: {int(count)} {side} images; at least 2 are needed")
        fid = float(super().compute())
        self.kid_scores = self._kid() if self.kid.real_features else None
        self.fid_ci = self._bootstrap(fid) if self.ci_bootstraps else None
        return fid

    def _kid(self) -> tuple[float, float, int]:
        return kid_score(self.kid, self._fake(), self.kid_subset_size, KID_SEED)

    def _bootstrap(self, fid: float) -> tuple[float, float]:
        mu_r, cov_r = self.real_stats()
        return bootstrap_fid_interval(self._fake(), mu_r, cov_r, fid, self.ci_bootstraps, KID_SEED)

    def _fake(self) -> torch.Tensor:
        """The generated features (N, D) float32 (all ranks' inside ``compute``)."""
        feats: Any = self.fake_features  # a list state: a tensor once torchmetrics has gathered the ranks'
        return feats if isinstance(feats, torch.Tensor) else torch.cat(feats)

    def scores(self, key: str = "fid") -> dict:
        """``{key: FID, 'kid'+rest: KID, 'kid_std'+rest: its std}`` (rest: what follows 'fid' in ``key``,
        e.g. 'fid/denoised' -> 'kid/denoised', 'kid_std/denoised'); KID only with real features."""
        out, rest = {key: self.compute()}, key.removeprefix("fid")
        if self.kid_scores is not None:
            out[f"kid{rest}"], out[f"kid_std{rest}"] = self.kid_scores[:2]
        if self.fid_ci is not None:
            out[f"fid_ci_low{rest}"], out[f"fid_ci_high{rest}"] = self.fid_ci
        return out

    def score(self, batches: Iterable[torch.Tensor]) -> float:
        """``reset``, ``update`` with every batch, ``compute`` (single process)."""
        self.reset()
        for x in batches:
            self.update(x)
        return self.compute()

    def fresh(self) -> FID:
        """A metric with the same extractor (shared, not copied) and real statistics, no generated images."""
        memo: dict[int, Any] = {id(self.inception): self.inception}
        memo.update({id(f): f for f in self.kid.real_features})
        other = copy.deepcopy(self, memo=memo)
        other.reset()
        return other


def configured_scores(scores: dict, denoise: bool) -> dict:
    """From ``scores`` of both variants (``FID.scores('fid/denoised')``, ``...('fid/no_denoise')``):
    those of the samples the sampler's ``denoise`` gives, under the plain names (``fid``, ``kid``,
    ``kid_std``, ``fid_ci_low``, ``fid_ci_high``)."""
    suffix = "/denoised" if denoise else "/no_denoise"
    names = ("fid", "kid", "kid_std", "fid_ci_low", "fid_ci_high")
    return {k: scores[k + suffix] for k in names if k + suffix in scores}


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
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    kid_real_images: int = 10000,
    ci_bootstraps: int = 0,
    classifier_seed: int | None = None,
    classifier_epochs: int | None = None,
    load_train_arrays: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    device: torch.device | str = "cpu",
) -> FID | None:
    """Build the FID metric from the ``fid`` config group plus what the data module knows.

    Config keys (conf/fid/*.yaml): ``backend`` ("inception" | "classifier" | "none": returns
    None), ``cache_dir``, ``stats_path`` (a user .npz with mu/sigma, or None to compute and
    cache), ``batch_size`` (images per extractor forward), ``kid_subsets``, ``kid_subset_size``
    and ``kid_real_images`` (KID), ``ci_bootstraps`` (FID's interval; see the module docstring),
    ``weights_path`` (inception only),
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
    if not (isinstance(kid_real_images, int) and kid_real_images >= 2):
        raise ValueError(f"fid.kid_real_images={kid_real_images!r}: must be an integer >= 2")
    if backend == "inception":
        path = check_inception_weights(weights_path)  # an explicit file: torchmetrics never downloads
        fid = FID(None, INCEPTION_NAME, path, batch_size, kid_subsets, kid_subset_size, ci_bootstraps)
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
            device=device,
        )
        fid = FID(extractor, extractor.name, None, batch_size, kid_subsets, kid_subset_size, ci_bootstraps)
    fid.to(device)
    load_or_compute_real_stats(fid, cache_dir, dataset, split, image_size, real_batches, stats_path=stats_path)
    load_or_compute_real_features(fid, cache_dir, dataset, split, image_size, real_batches, kid_real_images)
    return fid
