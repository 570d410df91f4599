"""scikit-learn's 8x8 handwritten digits (1,797 images; ship inside scikit-learn, no download)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .base import ImageDataModule


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, 8, 8) float32 in [0, 1] (stored values are 0..16) and labels (N,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    return x, d.target.astype(np.int64)


class DigitsDataModule(ImageDataModule):
    """A fixed, seeded split: the last ``num_val`` images of a permutation validate."""

    levels = 17  # pixel values are k / 16
    data_shape = (1, 8, 8)

    def __init__(
        self,
        channels: int = 1,
        image_size: int = 8,
        batch_size: int = 128,
        num_workers: int = 0,
        random_flip: bool = False,
        dequantize: bool = True,
        val_split: str = "val",
        num_val: int = 197,
        split_seed: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ):
        super().__init__(batch_size, num_workers, random_flip, dequantize, val_split, pin_memory, persistent_workers)
        if channels != 1:
            raise ValueError(f"data.channels={channels}: the digits are grayscale, channels must be 1")
        if image_size != 8:
            raise ValueError(f"data.image_size={image_size}: the digits are 8x8, image_size must be 8")
        if not 0 < num_val < 1797:
            raise ValueError(f"data.num_val={num_val}: must be in 1..1796 (the digits have 1,797 images)")
        self.channels, self.image_size = channels, image_size
        self.num_val = num_val
        self.split_seed = split_seed

    def load_split(self, split: str):
        if split not in ("train", "val"):
            raise ValueError(f"data.val_split={split!r}: digits has splits 'train' and 'val'")
        x, y = load_digits_arrays()
        perm = np.random.default_rng(self.split_seed).permutation(len(x))
        idx = perm[: len(x) - self.num_val] if split == "train" else perm[len(x) - self.num_val :]
        return TensorDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))
