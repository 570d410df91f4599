"""The shared image DataModule: datasets of un-augmented images, training augmentation on top.

A concrete data module only says how to read a split (``load_split``); batching, workers,
augmentation (random horizontal flip, uniform dequantization; training batches only) and the
un-augmented iterator used for FID statistics live here once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .transforms import random_hflip, uniform_dequantize


class Augmented(Dataset):
    """Wraps an un-augmented dataset of ``(x, y)`` and applies the training transforms.

    Indexed by ``(epoch, i)`` (what ``EpochShuffle(keyed=True)`` yields), the flip and the
    dequantization noise of an image are drawn from a generator seeded by (seed, epoch, i) alone:
    the same in any worker process, on any rank, and after a resume. Indexed by ``i``, they come
    from the global random stream.
    """

    def __init__(self, base: Dataset, flip: bool, dequantize: bool, levels: int, seed: int = 0):
        self.base, self.flip, self.dequantize, self.levels, self.seed = base, flip, dequantize, levels, seed

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (None, key)
        g = None
        if epoch is not None:
            g = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_000_007 + i) % 2**63)
        x, y = self.base[i]
        if self.flip:
            x = random_hflip(x, generator=g)
        if self.dequantize:
            x = uniform_dequantize(x, self.levels, generator=g)
        return x, y


class ImageDataModule(L.LightningDataModule):
    """Base for image data modules. Subclasses set ``data_shape`` and implement ``load_split``."""

    #: number of quantization levels of the stored pixels (256 for 8-bit images)
    levels: int = 256
    #: (C, H, W)
    data_shape: tuple

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        random_flip: bool,
        dequantize: bool,
        val_split: str,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.random_flip = random_flip
        self.dequantize = dequantize
        self.val_split = val_split
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.train_set: Dataset | None = None  # both set by setup()
        self.val_set: Dataset | None = None
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
        aug = Augmented(self.train_set, self.random_flip, self.dequantize, self.levels, self.shuffle_seed)
        return train_loader(self, aug, drop_last=len(self.train_set) >= self.batch_size, keyed=True)

    def val_dataloader(self):
        return self._loader(self.val_set, shuffle=False, drop_last=False, generator=fixed_generator())

    def iter_unaugmented(self, split: str, batch_size: int) -> Iterator[torch.Tensor]:
        """Deterministic, un-augmented batches of ``batch_size`` images of ``split`` (for FID
        statistics: the workflow passes fid.batch_size)."""
        loader = DataLoader(self.load_split(split), batch_size=batch_size, shuffle=False, num_workers=0)
        for x, _ in loader:
            yield x


class EpochShuffle(DistributedSampler):
    """The training order: a permutation that depends only on (seed, epoch) (Lightning calls
    ``set_epoch`` at every epoch start; the global RNG, which a restart would advance differently,
    is not used). Under DDP, rank r of w takes every w-th index of the permutation, padded to equal
    length as ``DistributedSampler`` does; being one, it is not replaced by Lightning's.

    ``resume_at(epoch, n_done)``: a run resumed from a mid-epoch checkpoint skips, in that epoch
    only, the ``n_done`` indices this rank has already trained on, so it sees exactly what a straight
    run sees; ``n_done=None``: the epoch's last batch was trained, it yields nothing (so the epoch
    ends there also when ``trainer.limit_train_batches`` ends epochs before their data does).
    ``keyed=True`` yields ``(epoch, i)`` for ``Augmented``'s per-image random transforms.
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, keyed: bool = False):
        indices: Any = range(n)  # stands for the data: the sampler only takes its length
        super().__init__(indices, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.n, self.keyed = n, keyed
        self._resume: tuple[int, int | None] | None = None

    def resume_at(self, epoch: int, n_done: int | None) -> None:
        self._resume = (epoch, n_done)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        order = (order * -(-self.total_size // max(self.n, 1)))[: self.total_size]  # pad to w * num_samples
        mine = order[self.rank : self.total_size : self.num_replicas]
        if self._resume is not None and self._resume[0] <= self.epoch:
            if self._resume[0] == self.epoch:
                mine = mine[self._resume[1] :] if self._resume[1] is not None else []
            self._resume = None
        return iter([(self.epoch, i) for i in mine] if self.keyed else mine)


def train_loader(dm, dataset, drop_last: bool, keyed: bool = False) -> DataLoader:
    """The training DataLoader of a data module (``batch_size`` per rank, ``num_workers``,
    ``shuffle_seed`` and the optional ``pin_memory``/``persistent_workers`` attributes), ordered by
    ``EpochShuffle``. When Lightning restarts from a mid-epoch checkpoint, the batches of that
    epoch already trained are skipped (``resume_position``)."""
    workers = getattr(dm, "num_workers", 0)
    trainer = dm.trainer
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    sampler = EpochShuffle(len(dataset), dm.shuffle_seed, rank, world, keyed)
    position = resume_position(trainer, dm.batch_size)
    if position is not None:
        sampler.resume_at(*position)
    return DataLoader(
        dataset,
        batch_size=dm.batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=getattr(dm, "pin_memory", False) and torch.cuda.is_available(),
        persistent_workers=getattr(dm, "persistent_workers", False) and workers > 0,
        generator=fixed_generator(),
    )


def train_split(dm) -> Dataset:
    """The un-augmented training split of a data module (image modules read it with
    ``load_split``; the others after ``setup``)."""
    if hasattr(dm, "load_split"):
        return dm.load_split("train")
    dm.setup("fit")
    return dm.train_set


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
            message = message[message.rfind(marker) + len(marker) :].rstrip()
        super().__init__(message)


def resume_position(trainer, batch_size: int) -> tuple[int, int | None] | None:
    """(epoch, examples this rank already trained in it) when ``trainer`` is restarting from a
    mid-epoch checkpoint, (epoch, None) from one written after the epoch's last batch (before the
    epoch closed), else None. Reads Lightning's restored ``batch_progress`` (made consistent
    for the checkpoint that ``max_steps`` leaves by ``resume_where_fit_stopped``)."""
    if trainer is None or not trainer.fit_loop.restarting:
        return None
    progress = trainer.fit_loop.epoch_loop.batch_progress
    if progress.is_last_batch:  # written after the epoch's last batch (rebuild_loop_state): none of it is left
        return trainer.current_epoch, None
    if progress.current.ready:
        return trainer.current_epoch, progress.current.ready * batch_size
    return None
