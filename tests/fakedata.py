"""Writers of tiny datasets in the exact on-disk formats of the real ones (no download needed).

Each writer puts files where torchvision's downloader would, under ``root``, and returns the
pixels it wrote so tests can check a round trip. Reusable by any test (``from fakedata import ...``)
and by bench/bench_dataloader.py.

- ``write_cifar10``: the official python version, pickled dicts (protocol 2, like the originals)
  with ``data`` uint8 (N, 3072) and ``labels``; keys str (as the originals load with latin1) or bytes.
- ``write_celeba``: RGB JPEGs named 000001.jpg.. in celeba/img_align_celeba/ plus
  celeba/list_eval_partition.txt.
- ``write_mnist``: IDX files (magic 2051 / 2049, big-endian dims), plain or gzipped, in
  MNIST/raw/ (torchvision) or another folder.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_batch(images: np.ndarray, labels: np.ndarray, name: str, bytes_keys: bool) -> dict:
    entry = {
        "batch_label": name,
        "labels": [int(v) for v in labels],
        "data": np.ascontiguousarray(images.reshape(len(images), 3072)),
        "filenames": [f"img_{i:05d}.png" for i in range(len(images))],
    }
    if bytes_keys:
        entry = {k.encode("latin1"): v for k, v in entry.items()}
    return entry


def write_cifar10(
    root: str | Path, per_batch: int = 2, n_test: int = 3, seed: int = 0, bytes_keys: bool = False
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``<root>/cifar-10-batches-py/`` with 5 x ``per_batch`` training and ``n_test`` test images.

    Returns {'train': (images uint8 (N, 3, 32, 32), labels int64), 'test': (...)} in file order.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, names, n in (
        ("train", [f"data_batch_{i}" for i in range(1, 6)], per_batch),
        ("test", ["test_batch"], n_test),
    ):
        images, labels = [], []
        for name in names:
            x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
            y = rng.integers(0, 10, size=n).astype(np.int64)
            with open(folder / name, "wb") as f:
                pickle.dump(_cifar_batch(x, y, name, bytes_keys), f, protocol=2)
            images.append(x)
            labels.append(y)
        out[split] = (np.concatenate(images), np.concatenate(labels))
    meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR_CLASSES, "num_vis": 3072}
    if bytes_keys:
        meta = {k.encode("latin1"): v for k, v in meta.items()}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return out


def celeba_pattern(width: int = 178, height: int = 218, crop: int = 140) -> np.ndarray:
    """A (H, W, 3) uint8 image: red outside the central ``crop`` square (torchvision's center-crop
    box), inside it four flat quadrants: blue (top left), green (top right), white (bottom left),
    black (bottom right)."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[...] = (255, 0, 0)
    top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
    half = crop // 2
    quads = {(0, 0): (0, 0, 255), (0, 1): (0, 255, 0), (1, 0): (255, 255, 255), (1, 1): (0, 0, 0)}
    for (r, c), color in quads.items():
        img[top + r * half : top + (r + 1) * half, left + c * half : left + (c + 1) * half] = color
    return img


def write_celeba(
    root: str | Path,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    pattern: bool = False,
    size: tuple[int, int] = (178, 218),
) -> dict[str, list[str]]:
    """Write ``<root>/celeba/img_align_celeba/NNNNNN.jpg`` (``size`` = width, height) and
    ``<root>/celeba/list_eval_partition.txt``; splits in file order train, valid, test.

    Images are random noise, or ``celeba_pattern`` when ``pattern``. JPEGs use quality 95 and no
    chroma subsampling. Returns {'train': [file names], 'valid': [...], 'test': [...]}.
    """
    counts = counts or {"train": 3, "valid": 2, "test": 2}
    folder = Path(root) / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    lines, k = [], 0
    for code, split in enumerate(("train", "valid", "test")):
        for _ in range(counts.get(split, 0)):
            k += 1
            name = f"{k:06d}.jpg"
            px = celeba_pattern(*size) if pattern else rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(px).save(images / name, quality=95, subsampling=0)
            names[split].append(name)
            lines.append(f"{name} {code}\n")
    (folder / "list_eval_partition.txt").write_text("".join(lines))
    return names


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: str | Path, array: np.ndarray, magic: int, gz: bool) -> Path:
    """One IDX file (``.gz`` appended to the name when ``gz``)."""
    path = Path(str(path) + ".gz") if gz else Path(path)
    data = _idx_bytes(array, magic)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_mnist(
    root: str | Path, n_train: int = 4, n_test: int = 3, seed: int = 0, gz: bool = True, subdir: str = "MNIST/raw"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the four IDX files into ``<root>/<subdir>/`` (torchvision's layout by default).

    Returns {'train': (images uint8 (N, 28, 28), labels int64), 'test': (...)}.
    """
    folder = Path(root) / subdir
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.int64)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", x, 2051, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8), 2049, gz)
        out[split] = (x, y)
    return out
