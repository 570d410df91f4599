"""MNIST from the original IDX files, read by our own code.

Files (each plain or gzipped, ``<name>.gz``)::

    train-images-idx3-ubyte  train-labels-idx1-ubyte   60,000 training images
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte    10,000 test images

Looked for, in this order, in the first folder that holds all four:
``<root>/MNIST/raw/`` (where ``torchvision.datasets.MNIST(root, download=True)`` puts them),
``<root>/mnist/``, ``<root>/``. Within a folder the plain file wins over the ``.gz``.

IDX format (big-endian): magic int32 (0x00000803 = 2051 for images, 0x00000801 = 2049 for
labels: two zero bytes, type 0x08 = uint8, number of dimensions), one uint32 per dimension,
then the uint8 data. Images are (N, 28, 28); any other image_size resizes them once, bilinearly
(antialiased), at load.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from .base import DataError
from .files import ROOT_HINT, FileImageDataModule, Uint8Images, check_split, torchvision_download

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
SIDE = 28
MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def candidate_folders(root: Path) -> list[Path]:
    return [root / "MNIST" / "raw", root / "mnist", root]


def find_file(folder: Path, name: str) -> Path | None:
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _corrupt(path: Path, why: str) -> DataError:
    return DataError(
        f"MNIST file is corrupt: {path}: {why}. Fix: delete it and rerun with "
        f"data.download=true, or replace it with the original from {MIRROR}"
    )


def _expected(magic: int, path: Path, header: bytes) -> tuple[int, ...]:
    """Parse and validate an IDX header (magic + dims); returns the dims."""
    ndim = 3 if magic == IMAGE_MAGIC else 1
    if len(header) < 4 or int.from_bytes(header[:4], "big") != magic:
        found = int.from_bytes(header[:4], "big") if len(header) >= 4 else "nothing"
        raise _corrupt(
            path,
            f"magic number is {found}, expected {magic} "
            f"({'images: idx3 uint8' if ndim == 3 else 'labels: idx1 uint8'})",
        )
    if len(header) < 4 + 4 * ndim:
        raise _corrupt(path, "header ends early")
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (SIDE, SIDE):
        raise _corrupt(path, f"images are {dims[1]}x{dims[2]}, expected {SIDE}x{SIDE}")
    return dims


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The whole file -> uint8 array (N, 28, 28) for images, (N,) for labels; DataError if malformed."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # bad gzip header, CRC, truncated stream
        raise _corrupt(path, f"cannot read it ({type(e).__name__}: {e})") from e
    dims = _expected(magic, path, raw[:16])
    start = 4 + 4 * len(dims)
    count = int(np.prod(dims))
    if len(raw) - start != count:
        raise _corrupt(path, f"{len(raw) - start} bytes of data, the header announces {count}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def peek_idx(path: Path, magic: int) -> int:
    """Cheap check of one file: header, and size (plain) or gzip's stored size (ISIZE); returns N."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            header = f.read(16)
        dims = _expected(magic, path, header)
        size = 4 + 4 * len(dims) + int(np.prod(dims))
        if path.suffix == ".gz":
            with open(path, "rb") as f:
                f.seek(-4, 2)
                stored = int.from_bytes(f.read(4), "little")  # uncompressed size mod 2**32
            ok = stored == size % 2**32
        else:
            ok = path.stat().st_size == size
    except (OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, f"cannot read it ({type(e).__name__}: {e})") from e
    if not ok:
        raise _corrupt(path, f"truncated or padded: the header announces {dims[0]} items")
    return dims[0]


def resize(images: np.ndarray, size: int, chunk: int = 10_000) -> torch.Tensor:
    """uint8 (N, 28, 28) -> uint8 (N, 1, size, size); bilinear with antialiasing, rounded."""
    x = torch.from_numpy(images.copy())[:, None]
    if size == SIDE:
        return x
    out = [
        torch.nn.functional.interpolate(
            c.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for c in x.split(chunk)
    ]
    return torch.cat(out)


class MnistDataModule(FileImageDataModule):
    """MNIST, 1 x image_size x image_size (28 native); splits 'train' (60,000) and 'test' (10,000)."""

    NAME = "MNIST"
    CHANNELS = 1
    SIZES = None
    SIZE_NOTE = (
        f"images are {SIDE}x{SIDE}; image_size must be a positive int (any size other than {SIDE} is a bilinear resize)"
    )
    VAL_SPLITS = ("test",)
    DEFAULT_SIZE = 28
    DEFAULT_FLIP = False

    def locate(self) -> dict[str, Path] | None:
        """{file name: path} from the first candidate folder holding all four files, else None."""
        for folder in candidate_folders(self.root):
            found = {n: find_file(folder, n) for pair in FILES.values() for n in pair}
            if all(found.values()):
                return {n: p for n, p in found.items() if p is not None}
        return None

    def _not_found(self) -> DataError:
        names = ", ".join(n for pair in FILES.values() for n in pair)
        where = ", ".join(f"{f}/" for f in candidate_folders(self.root))
        fetch = (
            "data.download=true only fetches in prepare_data(), which has not run: call it first"
            if self.download
            else "set data.download=true"
        )
        return DataError(
            f"MNIST data not found: looked for {names} (each plain or .gz) in {where} and found no "
            f"folder with all four. Fix: {fetch}, or data.root=/path/to/dir containing MNIST/raw/ or "
            f"mnist/ with these files ({ROOT_HINT})."
        )

    def prepare_data(self):
        """Fetch into ``<root>/MNIST/raw/`` with torchvision when ``download`` and files are missing."""
        if self.download and self.locate() is None:
            from torchvision.datasets import MNIST

            torchvision_download(
                "MNIST",
                lambda: MNIST(str(self.root), train=False, download=True),
                self.root,
                f"fetch the four .gz files from {MIRROR} into {self.root / 'MNIST' / 'raw'}",
            )

    def check(self) -> None:
        """Cheap: all four files found, headers valid, sizes match, image and label counts agree.
        Passes when files are absent but ``download`` is set."""
        found = self.locate()
        if found is None:
            if self.download:
                return
            raise self._not_found()
        for images, labels in FILES.values():
            n_images, n_labels = peek_idx(found[images], IMAGE_MAGIC), peek_idx(found[labels], LABEL_MAGIC)
            if n_images != n_labels:
                raise _corrupt(found[labels], f"{n_labels} labels for the {n_images} images of {found[images]}")

    def load_split(self, split: str) -> Uint8Images:
        check_split("MNIST", split, tuple(FILES))
        found = self.locate()
        if found is None:
            raise self._not_found()
        image_path, label_path = (found[n] for n in FILES[split])
        images, labels = read_idx(image_path, IMAGE_MAGIC), read_idx(label_path, LABEL_MAGIC)
        if len(images) != len(labels):
            raise _corrupt(label_path, f"{len(labels)} labels for the {len(images)} images of {image_path}")
        if labels.size and labels.max() > 9:
            raise _corrupt(label_path, f"labels must lie in 0..9, found {labels.max()}")
        return Uint8Images(resize(images, self.image_size), torch.from_numpy(labels.astype(np.int64)))
