"""A small CNN classifier as the FID feature extractor for small grayscale data (digits, MNIST).

There are no public InceptionV3 weights for 8x8 digits, and Inception features of upsampled
8x8 images say little. So, as is common for MNIST, the "FID" of these data sets uses the
penultimate layer of a classifier trained on the data set itself. The classifier is trained
deterministically from a seed on the training images, cached on disk
(``<cache_dir>/fid/classifier-<dataset>-<size>-s<seed>-e<epochs>-<version>.pt``, a dict of
plain tensors and numbers that ``torch.load(weights_only=True)`` reads) and its held-out test
accuracy is logged and stored with it. Values are only comparable between runs that use the
same backend ``name`` (which includes a hash of the weights).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

#: bump when the architecture or the training recipe changes (part of the cache key)
CLASSIFIER_VERSION = "v1"


class SmallClassifier(nn.Module):
    """conv-conv-pool-conv-conv-avgpool(4x4)-fc(128)-fc(classes); features = the 128-d ReLU layer."""

    feature_dim = 128

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(32 * 16, self.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> (N, 128) penultimate activations."""
        return self.body(2.0 * x - 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def classifier_cache_path(cache_dir: str | os.PathLike, dataset: str, image_size: int, seed: int, epochs: int) -> Path:
    return (
        Path(cache_dir).expanduser()
        / "fid"
        / f"classifier-{dataset}-{image_size}-s{seed}-e{epochs}-{CLASSIFIER_VERSION}.pt"
    )


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            correct += int((model(xb).argmax(dim=1) == yb).sum())
    return correct / max(len(y), 1)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    epochs: int,
    test_fraction: float = 0.15,
    batch_size: int = 64,
    lr: float = 2e-3,
    device: torch.device | str = "cpu",
) -> tuple[SmallClassifier, float]:
    """Train on a seeded (1 - test_fraction) split of ``images`` (N, C, H, W) in [0, 1] with
    integer ``labels`` (N,); return the model (in eval mode) and its accuracy on the rest.

    Deterministic for a given seed and device: initialisation, the split and the batch order
    all come from ``seed`` (the global RNG is left untouched).
    """
    images = np.asarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(
            f"train_classifier: images {images.shape} and labels {labels.shape}; expected (N, C, H, W) and (N,)"
        )
    if epochs < 1 or not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"train_classifier: epochs={epochs} (>= 1) and test_fraction={test_fraction} (in (0, 1)) are out of range"
        )
    num_classes = int(labels.max()) + 1
    perm = np.random.default_rng(seed).permutation(len(images))
    n_test = max(1, int(round(test_fraction * len(images))))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    x = torch.from_numpy(images).to(device)
    y = torch.from_numpy(labels).to(device)
    x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallClassifier(images.shape[1], num_classes)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen).to(device)
        for idx in order.split(batch_size):
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    acc = _accuracy(model, x_test, y_test, 512)
    return model.eval().requires_grad_(False), acc


def _weights_hash(state_dict: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


class ClassifierFeatures(nn.Module):
    """The FID feature extractor of a ``SmallClassifier`` (a torchmetrics custom extractor):
    float images (N, C, H, W) in [0, 1] (clamped; NaN -> 0) -> penultimate features (N, 128) float64."""

    def __init__(self, model: SmallClassifier, name: str, test_accuracy: float):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.name = name
        self.num_features = model.feature_dim
        self.in_channels = model.body[0].in_channels
        self.test_accuracy = test_accuracy

    def train(self, mode: bool = True) -> ClassifierFeatures:
        return super().train(False)  # always in eval mode, like torchmetrics' InceptionV3

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.nan_to_num(images.to(torch.float32), nan=0.0).clamp(0.0, 1.0)
        return self.model.features(x).to(torch.float64)


def build_classifier_backend(
    cache_dir: str | os.PathLike,
    dataset: str,
    image_size: int,
    seed: int,
    epochs: int,
    load_train_arrays: Callable[[], tuple[np.ndarray, np.ndarray]],
    device: torch.device | str = "cpu",
) -> ClassifierFeatures:
    """Load the cached classifier for (dataset, image_size, seed, epochs), or train and cache it.

    ``load_train_arrays()`` -> (images (N, C, H, W) float in [0, 1], labels (N,) int) is only
    called when there is no cache file (e.g. ``ncsn.data.digits.load_digits_arrays``).
    Training runs on ``device``; the file is written atomically (tmp file, then os.replace).
    """
    path = classifier_cache_path(cache_dir, dataset, image_size, seed, epochs)
    meta_expected = {
        "dataset": dataset,
        "image_size": image_size,
        "seed": seed,
        "epochs": epochs,
        "version": CLASSIFIER_VERSION,
    }
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            meta, state = blob["meta"], blob["state_dict"]
            with torch.random.fork_rng(devices=[]):  # weights overwritten below: draw nothing
                model = SmallClassifier(int(meta["in_channels"]), int(meta["num_classes"]))  # from the run's stream
            model.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - any unreadable cache gets the same advice
            raise RuntimeError(
                f"FID classifier cache {path} is unreadable ({type(e).__name__}: {e}); delete it to retrain"
            ) from e
        for k, v in meta_expected.items():
            if meta.get(k) != v:
                raise RuntimeError(
                    f"FID classifier cache {path} has {k}={meta.get(k)!r}, expected {v!r}; delete the file to retrain"
                )
        acc = float(meta["test_accuracy"])
        log.info("FID classifier loaded from %s (test accuracy %.4f)", path, acc)
    else:
        images, labels = load_train_arrays()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != image_size or images.shape[-2] != image_size:
            raise ValueError(
                f"FID classifier for {dataset!r}: training images have shape "
                f"{images.shape}, expected (N, C, {image_size}, {image_size})"
            )
        model, acc = train_classifier(images, labels, seed=seed, epochs=epochs, device=device)
        model.cpu()
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        meta = dict(
            meta_expected,
            in_channels=int(images.shape[1]),
            num_classes=int(model.head.out_features),
            test_accuracy=float(acc),
            num_train_images=int(len(images)),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        torch.save({"state_dict": state, "meta": meta}, tmp)
        os.replace(tmp, path)
        log.info("FID classifier trained for %s: test accuracy %.4f, cached at %s", dataset, acc, path)
    name = f"{path.stem}-{_weights_hash(model.state_dict())}"
    return ClassifierFeatures(model, name=name, test_accuracy=acc).to(device)
