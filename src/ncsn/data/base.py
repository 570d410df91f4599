"""The shared image DataModule: datasets of un-augmented images, training augmentation on top.

A concrete data module only says how to read a split (``load_split``); batching, workers,
augmentation (random horizontal flip, uniform dequantization; training batches only) and the
un-augmented iterator used for FID statistics live here once.
"""

from __future__ import annotations

from typing import Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .transforms import random_hflip, uniform_dequantize


class Augmented(Dataset):
    """Wraps an un-augmented dataset of ``(x, y)`` and applies the training transforms."""

    def __init__(self, base: Dataset, flip: bool, dequantize: bool, levels: int):
        self.base, self.flip, self.dequantize, self.levels = base, flip, dequantize, levels

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        if self.flip:
            x = random_hflip(x)
        if self.dequantize:
            x = uniform_dequantize(x, self.levels)
        return x, y


class ImageDataModule(L.LightningDataModule):
    """Base for image data modules. Subclasses set ``data_shape`` and implement ``load_split``."""

    #: number of quantization levels of the stored pixels (256 for 8-bit images)
    levels: int = 256
    #: (C, H, W)
    data_shape: tuple

    def __init__(self, batch_size: int, num_workers: int, random_flip: bool, dequantize: bool,
                 val_split: str, pin_memory: bool = True, persistent_workers: bool = True):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.random_flip = random_flip
        self.dequantize = dequantize
        self.val_split = val_split
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.train_set = self.val_set = None
        self.shuffle_seed = 0  # the run's seed (set by the training workflow)

    # -- to implement ------------------------------------------------------------------
    def load_split(self, split: str) -> Dataset:
        """Return an un-augmented dataset of ``(x float (C,H,W) in [0,1], y long)`` for ``split``."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise ``DataError`` with an actionable message when the data is absent or broken."""

    # -- Lightning -----------------------------------------------------------------------
    def setup(self, stage: str | None = None):
        if self.train_set is None:
            self.train_set = self.load_split("train")
            self.val_set = self.load_split(self.val_split)

    def _loader(self, dataset, shuffle: bool, drop_last: bool, batch_size: int | None = None, generator=None):
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            generator=generator,
        )

    def train_dataloader(self):
        aug = Augmented(self.train_set, self.random_flip, self.dequantize, self.levels)
        return train_loader(self, aug, drop_last=len(self.train_set) >= self.batch_size)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False, drop_last=False, generator=fixed_generator())

    def iter_unaugmented(self, split: str, batch_size: int = 256) -> Iterator[torch.Tensor]:
        """Deterministic, un-augmented batches of images of ``split`` (for FID statistics)."""
        loader = DataLoader(self.load_split(split), batch_size=batch_size, shuffle=False,
                            num_workers=0)
        for x, _ in loader:
            yield x


class EpochShuffle(Sampler):
    """A random order that depends only on (seed, epoch): Lightning calls ``set_epoch`` at every
    epoch start, so a resumed run sees the same order as a straight one (the global RNG, which a
    restart would advance differently, is not used)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


def train_loader(dm, dataset, drop_last: bool) -> DataLoader:
    """The training DataLoader of a data module (``batch_size``, ``num_workers``, ``shuffle_seed``
    and the optional ``pin_memory``/``persistent_workers`` attributes). Under DDP, Lightning puts
    its DistributedSampler (seeded by seed and epoch) in place of the shuffling."""
    workers = getattr(dm, "num_workers", 0)
    distributed = dm.trainer is not None and dm.trainer.world_size > 1
    return DataLoader(
        dataset,
        batch_size=dm.batch_size,
        shuffle=True if distributed else None,
        sampler=None if distributed else EpochShuffle(len(dataset), dm.shuffle_seed),
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=getattr(dm, "pin_memory", False) and torch.cuda.is_available(),
        persistent_workers=getattr(dm, "persistent_workers", False) and workers > 0,
        generator=fixed_generator(),
    )


def fixed_generator() -> torch.Generator:
    """For loaders that must not draw from the global RNG (a DataLoader iterator draws its base
    seed from it): validation then leaves the training's random stream, and so resumed runs,
    unchanged."""
    return torch.Generator().manual_seed(0)


class DataError(RuntimeError):
    """Data absent, incomplete or corrupt; the message says what was looked for and how to fix it.

    Raised inside a DataLoader worker (e.g. a corrupt JPEG), torch re-raises it in the main process
    as ``DataError("Caught DataError in DataLoader worker process N.\\nOriginal Traceback ...")``;
    the message is cut back to the original one (the full text stays in ``worker_traceback``).
    """

    def __init__(self, message: str = ""):
        self.worker_traceback = None
        marker = f"\n{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith(f"Caught {type(self).__name__} in DataLoader worker") and marker in message:
            self.worker_traceback = message
            message = message[message.rfind(marker) + len(marker):].rstrip()
        super().__init__(message)
