"""FID wiring for train.py and sample.py: one builder over ``ncsn.metrics.build_fid``; the start-up
check of the held-out bits/dim callback (``val/bpd``)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from ..data.base import DataError
from ..metrics import FIDWeightsMissing, StatsFileError, build_fid, check_inception_weights
from ..metrics.likelihood import check_continuous
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
            **cast(dict, OmegaConf.to_container(fid_cfg, resolve=True)),
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


def check_val_bpd(cfg: DictConfig, net, datamodule) -> None:
    """At start-up, when ``callbacks.val_bpd.every_n_epochs`` is set: a sigma-continuous network
    (the ODE evaluates every sigma), an interval that is a multiple of the validation interval,
    and no more images than the validation split holds. One line naming the key, else nothing."""
    node: Any = (cfg.get("callbacks") or {}).get("val_bpd")
    every = None if node is None else node.get("every_n_epochs")
    if every is None:
        return
    key = f"callbacks.val_bpd.every_n_epochs={every}"
    try:
        check_continuous(net)
    except ValueError as e:
        raise ConfigError(f"{key} is invalid for this network (set it to null): {e}") from None
    val_every = OmegaConf.select(cfg, "trainer.check_val_every_n_epoch") or 1
    if isinstance(every, int) and every % val_every:
        raise ConfigError(
            f"{key} is invalid: must be a multiple of trainer.check_val_every_n_epoch={val_every} "
            "(val/bpd is computed after validation)"
        )
    held = getattr(datamodule, "val_set", None)
    if held is not None and node.get("n_images") is not None and node.n_images > len(held):
        raise ConfigError(
            f"callbacks.val_bpd.n_images={node.n_images} is invalid: the validation split has {len(held)} images"
        )
