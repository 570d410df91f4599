"""CIFAR-10 from the official python version, read by our own code.

Layout (what ``torchvision.datasets.CIFAR10(root, download=True)`` extracts)::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5   50,000 training images
    <root>/cifar-10-batches-py/test_batch                      10,000 test images
    <root>/cifar-10-batches-py/batches.meta                    class names (not needed here)

Each batch file is a pickled dict (written by Python 2; loaded with ``encoding="latin1"``; keys
``str`` or ``bytes``) with ``data``: uint8 array (N, 3072), each row the R, G, B planes of a 32x32
image in row-major order, and ``labels``: N ints in 0..9.

torchvision's reader md5-checks every file; ours validates the structure instead, so files in the
real format (tests, benchmarks, re-packed copies) load, and a bad file is reported by name.
The unpickler resolves only the numpy globals an array needs, never arbitrary code.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import DataError
from .files import ROOT_HINT, FileImageDataModule, Uint8Images, check_split, missing, short_list, torchvision_download

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

# globals a pickled numpy array may name (numpy 1 spells numpy._core as numpy.core)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes inside a protocol-2 pickle written by Python 3
}


class _ArrayUnpickler(pickle.Unpickler):
    """Loads dicts, lists, numbers, strings and numpy arrays; refuses any other global."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name} (only numpy arrays expected)")
        if module.startswith("numpy.core."):  # avoid numpy 2's deprecated alias where possible
            try:
                return getattr(importlib.import_module("numpy._core." + module[len("numpy.core.") :]), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def _corrupt(path: Path, why: str) -> DataError:
    return DataError(
        f"CIFAR-10 file is corrupt: {path}: {why}. Fix: replace it with the official file "
        f"(delete {path.parent} and rerun with data.download=true, or extract {URL} into {path.parent.parent})"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 (N, 3, 32, 32) and labels int64 (N,); DataError if malformed."""
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as e:  # truncated, not a pickle, foreign objects, unreadable
        raise _corrupt(path, f"cannot unpickle it ({type(e).__name__}: {e})") from e
    if not isinstance(entry, dict):
        raise _corrupt(path, f"expected a pickled dict, found {type(entry).__name__}")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise _corrupt(path, f"expected keys 'data' and 'labels', found {sorted(map(str, entry))}")
    data = entry["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(path, f"'data' must be a uint8 array of shape (N, 3072), found {what}")
    try:
        labels = np.asarray(entry["labels"])
    except Exception as e:
        raise _corrupt(path, f"'labels' is not a list of ints ({e})") from e
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise _corrupt(path, f"'labels' must be {data.shape[0]} ints, found {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise _corrupt(path, f"'labels' must lie in 0..9, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def looks_complete(path: Path) -> bool:
    """Cheap truncation test: a non-empty file whose last byte is pickle's STOP opcode."""
    size = path.stat().st_size
    if size < 2:
        return False
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == pickle.STOP


class Cifar10DataModule(FileImageDataModule):
    """CIFAR-10, 3x32x32, splits 'train' (50,000) and 'test' (10,000); labels 0..9."""

    NAME = "CIFAR-10"
    CHANNELS = 3
    SIZES = (32,)
    SIZE_NOTE = "images are 32x32; set data.image_size=32"
    VAL_SPLITS = ("test",)
    DEFAULT_SIZE = 32

    @property
    def folder(self) -> Path:
        return self.root / FOLDER

    def _not_found(self, absent: list[str]) -> DataError:
        fetch = (
            "data.download=true only fetches in prepare_data(), which has not run: call it first"
            if self.download
            else "set data.download=true"
        )
        return DataError(
            f"CIFAR-10 data not found: looked in {self.folder} for {short_list(absent)} "
            f"(the official python version: {', '.join(TRAIN_FILES + TEST_FILES)}). "
            f"Fix: {fetch}, or data.root=/path/to/dir containing {FOLDER}/ ({ROOT_HINT})."
        )

    def prepare_data(self):
        """Fetch the official archive with torchvision when ``download`` and files are missing."""
        if self.download and missing(self.folder, TRAIN_FILES + TEST_FILES):
            from torchvision.datasets import CIFAR10

            torchvision_download(
                "CIFAR-10",
                lambda: CIFAR10(str(self.root), train=False, download=True),
                self.root,
                f"fetch {URL} and extract it into {self.root}",
            )

    def check(self) -> None:
        """Cheap: every batch file present and not truncated. Passes when files are absent but
        ``download`` is set (``prepare_data`` fetches them). Full validation happens on load."""
        absent = missing(self.folder, TRAIN_FILES + TEST_FILES)
        if absent:
            if self.download:
                return
            raise self._not_found(absent)
        for name in TRAIN_FILES + TEST_FILES:
            if not looks_complete(self.folder / name):
                raise _corrupt(self.folder / name, "empty or truncated (no pickle STOP byte at the end)")

    def load_split(self, split: str) -> Uint8Images:
        check_split("CIFAR-10", split, ("train", "test"))
        names = TRAIN_FILES if split == "train" else TEST_FILES
        absent = missing(self.folder, names)
        if absent:
            raise self._not_found(absent)
        batches = [read_batch(self.folder / n) for n in names]
        images = np.concatenate([b[0] for b in batches])
        labels = np.concatenate([b[1] for b in batches])
        return Uint8Images(torch.from_numpy(images), torch.from_numpy(labels))
