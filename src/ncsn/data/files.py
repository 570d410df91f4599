"""Shared by the readers of on-disk image datasets (CIFAR-10, CelebA, MNIST).

Listing what is missing, wrapping torchvision's downloaders so that a failure becomes a
``DataError`` with a manual fix, and the in-memory dataset of 8-bit images that CIFAR-10 and
MNIST decode into.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .base import DataError, ImageDataModule

#: the hint appended to every "not found" message: where ``data.root`` comes from by default
ROOT_HINT = "data.root defaults to ${paths.data_dir}, i.e. $NCSN_DATA_DIR or ./data"


def missing(folder: Path, names: Iterable[str]) -> list[str]:
    """The names in ``names`` that are not files inside ``folder``."""
    return [n for n in names if not (folder / n).is_file()]


def short_list(names: list[str], limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, ... (12 in all)`` for long lists."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def check_image_config(
    dataset: str, image_size: int, channels: int, sizes: tuple[int, ...] | None, channel_count: int, size_note: str
) -> None:
    """Raise ValueError naming the config key when ``image_size`` / ``channels`` don't fit.

    ``sizes`` is the tuple of allowed sizes, or None for any positive size.
    """
    if (
        not isinstance(image_size, int)
        or isinstance(image_size, bool)
        or image_size <= 0
        or (sizes is not None and image_size not in sizes)
    ):
        raise ValueError(f"data.image_size={image_size!r}: {dataset} {size_note}")
    if channels != channel_count:
        raise ValueError(
            f"data.channels={channels!r}: {dataset} images have {channel_count} "
            f"channel{'s' if channel_count > 1 else ''}; set data.channels={channel_count}"
        )


def check_val_split(dataset: str, val_split: str, allowed: tuple[str, ...]) -> None:
    if val_split not in allowed:
        raise ValueError(
            f"data.val_split={val_split!r}: {dataset} validates on one of {', '.join(repr(s) for s in allowed)}"
        )


def check_split(dataset: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise ValueError(
            f"split {split!r}: {dataset} has splits {', '.join(repr(s) for s in allowed)} "
            f"(data.val_split picks the validation one)"
        )


def torchvision_download(dataset: str, fetch: Callable[[], object], root: Path, manual: str) -> None:
    """Run ``fetch`` (a torchvision dataset constructed with ``download=True``) and turn any
    failure into a DataError that says how to place the files by hand."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fetch()
    except Exception as e:  # network, checksum, missing gdown, disk: all end the same way
        raise DataError(
            f"{dataset} download failed into {root}: {type(e).__name__}: {e}. "
            f"Fix: download it by hand: {manual}; then rerun with data.root={root}"
        ) from e


class Uint8Images(Dataset):
    """Images held in memory as uint8 (N, C, H, W); item ``i`` is ``(x float in [0, 1], y long)``.

    Pixels come back as exactly ``k / 255``, so a round trip of known values is exact.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.images[i].float().div_(255.0), self.labels[i]


class FileImageDataModule(ImageDataModule):
    """Base of the data modules read from files under ``root`` (CIFAR-10, CelebA, MNIST): checks
    ``image_size``, ``channels`` and ``val_split`` against the class's ``NAME``, ``CHANNELS``,
    ``SIZES`` (None = any positive size), ``SIZE_NOTE`` and ``VAL_SPLITS``. The subclasses only set
    those; ``image_size``, ``channels`` and ``random_flip`` left at None take the class's
    ``DEFAULT_SIZE``, ``CHANNELS`` and ``DEFAULT_FLIP`` (conf/data/*.yaml sets every argument)."""

    NAME: str
    CHANNELS: int
    SIZES: tuple[int, ...] | None
    SIZE_NOTE: str
    VAL_SPLITS: tuple[str, ...]
    DEFAULT_SIZE: int
    DEFAULT_FLIP: bool = True

    def __init__(
        self,
        root: str = "data",
        image_size: int | None = None,
        channels: int | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        random_flip: bool | None = None,
        dequantize: bool = True,
        val_split: str = "test",
        download: bool = False,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ):
        image_size = self.DEFAULT_SIZE if image_size is None else image_size
        channels = self.CHANNELS if channels is None else channels
        random_flip = self.DEFAULT_FLIP if random_flip is None else random_flip
        check_image_config(self.NAME, image_size, channels, self.SIZES, self.CHANNELS, self.SIZE_NOTE)
        check_val_split(self.NAME, val_split, self.VAL_SPLITS)
        super().__init__(batch_size, num_workers, random_flip, dequantize, val_split, pin_memory, persistent_workers)
        self.root = Path(root).expanduser().absolute()
        self.image_size = image_size
        self.channels = channels
        self.download = download
        self.data_shape = (self.CHANNELS, image_size, image_size)
