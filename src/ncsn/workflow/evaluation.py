"""FID wiring for train.py and sample.py: one builder over ``ncsn.metrics.build_fid``."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ..data.base import DataError
from ..metrics import FIDWeightsMissing, StatsFileError, build_fid, check_inception_weights
from .config import ConfigError


def check_fid_weights(cfg: DictConfig) -> None:
    """At startup, before any work: the Inception weights file must be on disk."""
    fid_cfg = cfg.get("fid")
    if fid_cfg is not None and fid_cfg.backend == "inception":
        try:
            check_inception_weights(fid_cfg.weights_path)
        except FIDWeightsMissing as e:
            raise ConfigError(str(e)) from None


def dataset_name(datamodule) -> str:
    return type(datamodule).__name__.removesuffix("DataModule").lower()


def train_arrays(datamodule, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All (un-augmented) training images and labels, for the classifier FID backend, read
    ``batch_size`` (fid.batch_size) at a time."""
    xs, ys = [], []
    for x, y in DataLoader(datamodule.load_split("train"), batch_size=batch_size, shuffle=False):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def build_fid_for(fid_cfg: DictConfig, datamodule, device: str = "cpu"):
    """The FID object of ``fid_cfg`` against the training split's statistics (cached), or None."""
    if fid_cfg is None or fid_cfg.backend == "none":
        return None
    if len(datamodule.data_shape) != 3:
        raise ConfigError(
            f"fid.backend={fid_cfg.backend!r} needs image data; use fid=none for "
            f"data of shape {tuple(datamodule.data_shape)}"
        )
    if hasattr(datamodule, "prepare_data"):
        datamodule.prepare_data()
    try:
        return build_fid(
            **OmegaConf.to_container(fid_cfg, resolve=True),
            dataset=dataset_name(datamodule),
            split="train",
            image_size=int(datamodule.data_shape[-1]),
            real_batches=lambda: datamodule.iter_unaugmented("train", fid_cfg.batch_size),
            load_train_arrays=lambda: train_arrays(datamodule, fid_cfg.batch_size),
            device=device,
        )
    except (FIDWeightsMissing, StatsFileError, DataError) as e:
        raise ConfigError(str(e)) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"fid: {e}") from None


def build_training_fid(cfg: DictConfig, datamodule):
    """Built on the process that runs the workflow (every rank under ddp: the cache is shared)."""
    samples_cb = (cfg.get("callbacks") or {}).get("samples")
    if samples_cb is None:
        return None
    device = "cuda" if torch.cuda.is_available() and cfg.trainer.accelerator in ("gpu", "cuda", "auto") else "cpu"
    return build_fid_for(cfg.get("fid"), datamodule, device)
