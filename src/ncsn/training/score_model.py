"""The LightningModule: a noise-conditional score network trained with annealed DSM.

Thin glue: the loss is ``ncsn.losses.dsm_loss``, the noise levels are the network's
``sigmas`` buffer (made once by ``ncsn.sigmas.make_sigmas``), the EMA is torch's
``AveragedModel``. Validation and sampling use the EMA weights (``score_net``).
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..losses import dsm_loss, per_level_mean
from ..speed import adam_kwargs, maybe_compile
from .resume import capture_rng_states, restore_rng_states, resume_where_fit_stopped

NONFINITE_POLICIES = ("raise", "skip")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class ScoreModel(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        ema_decay: float | None = 0.999,
        anneal_power: float = 2.0,
        on_nonfinite: str = "raise",
        fused: bool | str = "auto",
        compile_net: bool = False,
        compile_mode: str | None = None,
        config: dict | None = None,
    ):
        super().__init__()
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"on_nonfinite={on_nonfinite!r} must be one of {NONFINITE_POLICIES}")
        self.net = net
        self.lr, self.betas, self.eps, self.weight_decay, self.amsgrad = lr, (beta1, beta2), eps, weight_decay, amsgrad
        self.anneal_power = anneal_power
        self.on_nonfinite = on_nonfinite
        self.fused = fused
        # The compiled network shares the parameters of self.net; kept out of the module tree so
        # checkpoints and the EMA copy see only self.net's keys.
        self.__dict__["train_net"] = maybe_compile(net, compile_net, compile_mode)
        self.ema = None
        if ema_decay is not None:
            self.ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
            self.ema.requires_grad_(False)
        # The resolved run config as a plain dict (weights-only loading needs plain containers).
        self.save_hyperparameters({"config": config or {}})
        self.register_buffer("skipped_batches", torch.zeros((), dtype=torch.long))
        self._val_sums = self._val_counts = None

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
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = capture_rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint:
            restore_rng_states(checkpoint["rng_states"])
        resume_where_fit_stopped(checkpoint)

    # -- training ------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x = batch[0]
        out = dsm_loss(self.train_net, x, self.sigmas, self.anneal_power)
        if not torch.isfinite(out.loss):
            bad = torch.unique(out.level_index[~torch.isfinite(out.per_example)]).tolist()
            sig = [round(float(self.sigmas[i]), 6) for i in bad]
            msg = (
                f"non-finite DSM loss at global step {self.global_step} (epoch {self.current_epoch}); "
                f"offending noise level indices {bad} (sigma {sig})"
            )
            if self.on_nonfinite == "raise":
                raise NonFiniteLossError(msg + ". Set on_nonfinite=skip to skip such batches.")
            self.skipped_batches += 1
            self.log("train/skipped_batches", self.skipped_batches.float(), on_step=True)
            return None  # Lightning skips the optimizer step
        self.log("train/loss", out.loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(x))
        return out.loss

    def configure_optimizers(self):
        return torch.optim.Adam(
            self.net.parameters(),
            lr=self.lr,
            betas=self.betas,
            eps=self.eps,
            weight_decay=self.weight_decay,
            amsgrad=self.amsgrad,
            **adam_kwargs(self.device, self.fused),
        )

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    # -- validation: DSM loss per noise level on held-out data, EMA weights ---------------
    def on_validation_epoch_start(self):
        n = len(self.sigmas)
        self._val_sums = torch.zeros(n, device=self.device, dtype=torch.float64)
        self._val_counts = torch.zeros(n, device=self.device, dtype=torch.float64)

    def validation_step(self, batch, batch_idx):
        x = batch[0]
        # A fixed generator per batch: the validation loss is comparable across epochs.
        g = torch.Generator(device=x.device).manual_seed(10_000 + batch_idx)
        out = dsm_loss(self.score_net, x, self.sigmas, self.anneal_power, generator=g)
        sums, counts = per_level_mean(out.per_example.double(), out.level_index, len(self.sigmas))
        self._val_sums += sums
        self._val_counts += counts

    def on_validation_epoch_end(self):
        sums = self.trainer.strategy.reduce(self._val_sums, reduce_op="sum")
        counts = self.trainer.strategy.reduce(self._val_counts, reduce_op="sum")
        if counts.sum() == 0:
            return
        self.log("val/loss", (sums.sum() / counts.sum()).float(), prog_bar=True)
        for i in range(len(sums)):
            if counts[i] > 0:
                self.log(f"val/loss_level_{i:03d}", (sums[i] / counts[i]).float())
