"""2-D toy data: samples of a Gaussian mixture, drawn once from a seed."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from ..core.toy import GaussianMixture, paper_mixture
from .base import fixed_generator, train_loader


class ToyDataModule(L.LightningDataModule):
    """Training and validation points of a mixture (default: the NCSN paper's)."""

    data_shape = (2,)

    def __init__(
        self,
        dim: int = 2,
        mixture: str = "paper",
        n_train: int = 10000,
        n_val: int = 2000,
        batch_size: int = 128,
        seed: int = 0,
    ):
        super().__init__()
        if mixture != "paper":
            raise ValueError(f"data.mixture={mixture!r}: only 'paper' is defined")
        self.mixture: GaussianMixture = paper_mixture()
        if dim != self.mixture.dim:
            raise ValueError(f"data.dim={dim}: the {mixture!r} mixture is {self.mixture.dim}-D")
        self.dim = dim
        self.n_train, self.n_val, self.batch_size, self.seed = n_train, n_val, batch_size, seed
        self.train_set: TensorDataset | None = None  # both set by setup()
        self.val_set: TensorDataset | None = None
        self.shuffle_seed = 0  # the run's seed (set by the training workflow)

    def setup(self, stage: str | None = None):
        if self.train_set is None:
            g = torch.Generator().manual_seed(self.seed)
            pts = self.mixture.sample(self.n_train + self.n_val, generator=g).float()
            labels = torch.full((len(pts),), -1, dtype=torch.long)
            self.train_set = TensorDataset(pts[: self.n_train], labels[: self.n_train])
            self.val_set = TensorDataset(pts[self.n_train :], labels[self.n_train :])

    def train_dataloader(self):
        return train_loader(self, self.train_set, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size, generator=fixed_generator())
