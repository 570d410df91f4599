"""The LightningModule: a noise-conditional score network trained with annealed DSM.

Thin glue: the loss is a ``ncsn.core.losses.DSMLoss``, the optimizer a partial such as
``ncsn.training.optimizer.Adam``, the non-finite and exploding-loss rules a
``ncsn.training.guards.NonFiniteGuard``; each checks its own settings when it is made. The noise
levels are the network's ``sigmas`` buffer (made once by ``ncsn.core.sigmas.make_sigmas``), the EMA
is torch's ``AveragedModel``. Validation and sampling use the EMA weights (``score_net``).
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..core.checks import is_number
from ..core.losses import DSMLoss, LevelLoss
from ..core.speed import maybe_compile
from ..nets.base import ScoreNet
from .guards import NonFiniteGuard
from .optimizer import Adam
from .resume import (
    PROGRESS_KEY,
    align_logging_step,
    capture_rng_states,
    hold_fit_for_final_validation,
    rebuild_loop_state,
    record_progress,
    release_final_validation,
    restore_rng_states,
    resume_where_fit_stopped,
)

log = logging.getLogger(__name__)


class EmaUpdate:
    """torch's ``get_ema_multi_avg_fn(decay)`` (the same update, step for step) as a module-level
    callable: ``ddp_spawn`` pickles the model, and torch's local function cannot be pickled."""

    def __init__(self, decay: float):
        if not (is_number(decay) and 0 <= decay < 1):
            raise ValueError(f"optim.ema_decay={decay!r} is invalid: must be null or a number in [0, 1)")
        self.decay = decay

    @torch.no_grad()
    def __call__(self, ema_param_list, current_param_list, _) -> None:
        if torch.is_floating_point(ema_param_list[0]) or torch.is_complex(ema_param_list[0]):
            torch._foreach_lerp_(ema_param_list, current_param_list, 1 - self.decay)
        else:  # foreach lerp only handles float and complex
            for p_ema, p_model in zip(ema_param_list, current_param_list, strict=True):
                p_ema.copy_(p_ema * self.decay + p_model * (1 - self.decay))


class ScoreModel(L.LightningModule):
    """``net`` trained with ``loss`` (default ``DSMLoss()``) by the optimizer that the partial
    ``optimizer(params, device)`` makes (default ``Adam()``; a resume re-applies its ``hparams``),
    its weights averaged with ``ema_decay`` (None: no EMA), non-finite and exploding losses handled
    by ``guard`` (default ``NonFiniteGuard()``)."""

    def __init__(
        self,
        net: ScoreNet,
        loss: DSMLoss | None = None,
        optimizer: Adam | None = None,
        ema_decay: float | None = 0.999,
        guard: NonFiniteGuard | None = None,
        compile_net: bool = False,
        compile_mode: str | None = None,
        config: dict | None = None,
    ):
        super().__init__()
        self.net = net
        self.loss = DSMLoss() if loss is None else loss
        self.loss.check_net(net)
        self.make_optimizer = Adam() if optimizer is None else optimizer
        self.guard = NonFiniteGuard() if guard is None else guard
        self._in_batch = self._epoch_closed = False  # where fit stands (for PROGRESS_KEY)
        # set by the training workflow when the validation due at the step resumed from (= max_steps)
        # has not run yet; the fit loop is held for it (resume.hold_fit_for_final_validation)
        self.final_validation_pending = False
        self._held_max_steps: int | None = None
        # The compiled network shares the parameters of self.net; kept out of the module tree so
        # checkpoints and the EMA copy see only self.net's keys.
        self.__dict__["train_net"] = maybe_compile(net, compile_net, compile_mode)
        self.ema = None
        if ema_decay is not None:
            self.ema = AveragedModel(net, multi_avg_fn=EmaUpdate(ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)
        # The resolved run config as a plain dict (weights-only loading needs plain containers).
        self.save_hyperparameters({"config": config or {}})
        self.register_buffer("skipped_batches", torch.zeros((), dtype=torch.long))
        self._val = None  # LevelLoss of the validation in progress
        #: The last validation's DSM loss per level (index 0 = largest sigma) and images per level,
        #: summed over ranks (CPU float64; None before the first validation). Read by ValLossBySigma.
        self.val_loss_by_level = self.val_count_by_level = None

    @property
    def sigmas(self) -> torch.Tensor:
        return self.net.sigmas

    @property
    def score_net(self) -> nn.Module:
        """The network used for validation and sampling: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.net

    def forward(self, x, level_index):
        return self.score_net(x, level_index)

    # -- checkpoints: random-number states, so a resumed run draws what a straight run draws --
    # and our own record of where fit stood, from which the loop state is rebuilt on resume
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = capture_rng_states()
        if self._trainer is not None and "loops" in checkpoint:
            checkpoint[PROGRESS_KEY] = record_progress(self.trainer, self._in_batch, self._epoch_closed)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
        rebuild_loop_state(checkpoint)
        resume_where_fit_stopped(checkpoint)
        if self.final_validation_pending and self._trainer is not None:
            self._held_max_steps = hold_fit_for_final_validation(self.trainer, checkpoint)
        self.apply_configured_optimizer(checkpoint)

    def apply_configured_optimizer(self, checkpoint: dict) -> None:
        """Resume honours the config it runs with: the configured optimizer hyperparameters
        replace the ones saved with the optimizer state (its moments are kept); changes are logged."""
        wanted = self.make_optimizer.hparams
        for state in checkpoint.get("optimizer_states") or []:
            for group in state.get("param_groups", []):
                changed = {k: (group[k], v) for k, v in wanted.items() if k in group and _differs(group[k], v)}
                for k, (old, new) in changed.items():
                    log.warning(
                        "resume: optim %s %r -> %r (the configured value replaces the checkpoint's)", k, old, new
                    )
                    group[k] = new
                if "initial_lr" in group:
                    group["initial_lr"] = wanted["lr"]

    # -- where fit stands, for the checkpoints' PROGRESS_KEY ------------------------------
    def on_train_batch_start(self, batch, batch_idx):
        self._in_batch, self._epoch_closed = True, False
        align_logging_step(self.trainer)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self._in_batch = False  # (callbacks' on_train_batch_end, which save checkpoints, run first)

    def on_train_epoch_end(self):
        self._epoch_closed = True

    def on_validation_end(self):
        # the pending final validation has run (resume.hold_fit_for_final_validation): fit ends
        if self._held_max_steps is not None and not self.trainer.sanity_checking:
            release_final_validation(self.trainer, self._held_max_steps)
            self._held_max_steps = None

    # -- training ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x = batch[0]
        out = self.loss(self.train_net, x, self.sigmas, sigma_data=getattr(self.net, "sigma_data", None))
        if not torch.isfinite(out.loss):
            bad = torch.unique(out.level_index[~torch.isfinite(out.per_example)]).tolist()
            sig = [round(float(self.sigmas[i]), 6) for i in bad]
            self.guard.nonfinite(
                f"non-finite DSM loss at global step {self.global_step} (epoch {self.current_epoch}); "
                f"offending noise level indices {bad} (sigma {sig})",
                int(self.skipped_batches) + 1,
            )
            self.skipped_batches += 1
            self.log("train/skipped_batches", self.skipped_batches.float(), on_step=True)
            return None  # Lightning skips the optimizer step
        self.log("train/loss", out.loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(x))
        self.guard.watch(float(out.loss.detach()), self.global_step)
        return out.loss

    @property
    def loss_warning(self) -> str | None:
        """The exploding-loss warning (for results.json), or None."""
        return self.guard.warning

    def configure_optimizers(self):
        return self.make_optimizer(self.net.parameters(), self.device)

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    # -- validation: DSM loss per noise level on held-out data, EMA weights ---------------
    def on_validation_epoch_start(self):
        self._val = LevelLoss(len(self.sigmas), self.loss.val_levels_per_image, self.device)

    def validation_step(self, batch, batch_idx):
        """Every image of the batch at ``loss.val_levels_per_image`` levels (default: all L levels, so L
        forward passes per validation image; see ``ncsn.core.losses.LevelLoss``), in chunks of the batch
        size. The noise is drawn from a generator fixed per (batch, rank): the loss is comparable
        across validations."""
        x = batch[0]
        g = torch.Generator(device=x.device).manual_seed(10_000 + batch_idx + 1_000_003 * self.global_rank)
        image, level = self._val.pairs_for(len(x))
        for img, lev in zip(image.split(len(x)), level.split(len(x))):
            out = self.loss.at_levels(self.score_net, x[img], self.sigmas, lev, g)
            self._val.add(out.per_example, lev)

    def on_validation_epoch_end(self):
        """``val/loss`` (the mean over levels: every level has the same count); the per-level means
        go to ``val_loss_by_level`` (written by the ValLossBySigma callback, keyed by sigma)."""
        sums = self.trainer.strategy.reduce(self._val.sums, reduce_op="sum")
        counts = self.trainer.strategy.reduce(self._val.counts, reduce_op="sum")
        if counts.sum() == 0:
            return
        self.log("val/loss", (sums.sum() / counts.sum()).float(), prog_bar=True)
        self.val_loss_by_level = (sums / counts.clamp_min(1)).cpu()
        self.val_count_by_level = counts.cpu()


def _differs(a, b) -> bool:
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return list(a) != list(b)
    return a != b
