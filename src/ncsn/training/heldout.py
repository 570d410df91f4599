"""Held-out bits/dim during training (``val/bpd``): the likelihood estimator of
``ncsn.metrics.likelihood`` (probability-flow ODE, Hutchinson trace, uniform dequantization) on
the first images of the validation split, with the EMA weights, for sigma-continuous networks.

Unlike ``val/loss`` (a sum over the run's own noise levels), bits/dim is one quantity for every
noise schedule: the low-variance metric of a noise-scale ablation. It costs
``2 (num_steps - 1)`` network evaluations with a backward pass per image.
"""

from __future__ import annotations

import logging
import math

import torch
from lightning.pytorch.callbacks import Callback

from ..metrics.likelihood import ESTIMATORS, image_bpd

log = logging.getLogger(__name__)


class HeldoutBitsPerDim(Callback):
    """Every ``every_n_epochs`` epochs (null: never), after validation and never in the sanity
    check: bits/dim of the first ``n_images`` images of the data module's validation split
    (``data.val_split``), ``batch_size`` per ODE solve, Heun on ``num_steps`` Karras sigmas
    (``rho``) between the network's smallest and largest sigma, the trace by ``estimator``. Image
    i's dequantization noise and probe vector come from ``seed`` and i alone, so every evaluation
    scores the same points. Logged: ``val/bpd`` (mean) and ``val/bpd_se`` (its standard error over
    images). Rank r of w scores images r, r + w, ...; the sums are gathered across ranks."""

    def __init__(
        self,
        every_n_epochs: int | None = None,
        n_images: int = 64,
        batch_size: int = 64,
        num_steps: int = 50,
        rho: float = 7.0,
        estimator: str = "hutchinson",
        seed: int = 0,
    ):
        if every_n_epochs is not None and (isinstance(every_n_epochs, bool) or every_n_epochs < 1):
            raise ValueError(f"callbacks.val_bpd.every_n_epochs={every_n_epochs!r} is invalid: must be null or >= 1")
        for key, value, low in (("n_images", n_images, 2), ("batch_size", batch_size, 1), ("num_steps", num_steps, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"callbacks.val_bpd.{key}={value!r} is invalid: must be an integer >= {low}")
        if not (isinstance(rho, (int, float)) and math.isfinite(rho) and rho > 0):
            raise ValueError(f"callbacks.val_bpd.rho={rho!r} is invalid: must be a number > 0")
        if estimator not in ESTIMATORS:
            raise ValueError(f"callbacks.val_bpd.estimator={estimator!r} is invalid: must be one of {ESTIMATORS}")
        self.every_n_epochs, self.n_images, self.batch_size = every_n_epochs, n_images, batch_size
        self.num_steps, self.rho, self.estimator, self.seed = num_steps, rho, estimator, seed

    def due(self, trainer) -> bool:
        if self.every_n_epochs is None or trainer.sanity_checking:
            return False
        return (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self.due(trainer):
            return
        dm = trainer.datamodule
        held = dm.load_split(dm.val_split)
        n = min(self.n_images, len(held))
        net = pl_module.score_net
        was_training = net.training
        net.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=pl_module.device)  # sum, sum of squares, count
        # validation runs under inference mode; the trace needs autograd through the network
        with torch.inference_mode(False), torch.enable_grad():
            for index in torch.arange(trainer.global_rank, n, trainer.world_size).split(self.batch_size):
                x = torch.stack([held[int(i)][0] for i in index]).to(pl_module.device)
                bpd, _ = image_bpd(net, x, index, self.seed, dm.levels, self.num_steps, self.rho, self.estimator)
                sums += torch.stack([bpd.sum(), bpd.pow(2).sum(), torch.tensor(float(len(bpd)))]).to(sums)
        net.train(was_training)
        if trainer.world_size > 1:
            sums = pl_module.all_gather(sums).reshape(-1, 3).sum(0)
        total, squares, count = (float(v) for v in sums)
        mean = total / count
        var = max(squares / count - mean**2, 0.0) * count / max(count - 1, 1)
        se = math.sqrt(var / count)
        pl_module.log("val/bpd", mean, rank_zero_only=True)
        pl_module.log("val/bpd_se", se, rank_zero_only=True)
        if trainer.is_global_zero:
            log.info(
                "step %d (epoch %d), %d held-out images: val/bpd %.4g ± %.2g",
                trainer.global_step,
                trainer.current_epoch,
                int(count),
                mean,
                se,
            )
