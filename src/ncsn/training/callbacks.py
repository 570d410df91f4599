"""Lightning callbacks: periodic sampling on the EMA weights, sample grids and FID."""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..core.checks import is_int
from ..core.figures import save_loss_by_sigma, save_samples_figure
from ..core.loss_by_sigma import FILENAME, by_step, read_loss_by_sigma, write_loss_by_sigma
from ..metrics.fid import configured_scores
from ..sampling import Sampler

log = logging.getLogger(__name__)


def log_image_file(trainer: L.Trainer, key: str, path: Path) -> None:
    """Send an image file to every logger that takes images (W&B); the PNG stays in the run dir."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)


def samples_interval_error(every_n_epochs: int, check_val_every_n_epoch: int | None) -> str | None:
    """Samples (and FID) are drawn after a validation: ``every_n_epochs`` must be a multiple of the
    validation interval (else they would come only every least common multiple). The message, or
    None when it is. ``SampleCallback`` (constructor and setup) and the pre-flight check
    (``validate_train``) call this."""
    val_every = check_val_every_n_epoch or 1  # null: validation is step-based, every epoch may hold one
    if not (is_int(every_n_epochs) and every_n_epochs >= 1):
        return f"callbacks.samples.every_n_epochs={every_n_epochs!r} is invalid: must be an integer >= 1"
    if every_n_epochs % val_every:
        return (
            f"callbacks.samples.every_n_epochs={every_n_epochs} is invalid: must be a multiple of "
            f"trainer.check_val_every_n_epoch={val_every} (samples and FID run after validation)"
        )
    return None


class SampleCallback(Callback):
    """Every ``every_n_epochs`` epochs, after validation and never during the sanity check:
    sample with the EMA weights, save a PNG grid of ``sampler.n_samples`` samples (a scatter plot
    for 2-D data) under ``out_dir``, and log it with the sampling time. With an FID (``fid``,
    given by the training workflow), ``fid_samples`` samples are drawn instead, split across DDP
    ranks (rank r of w draws the per-sample seeds r, r + w, ... of ``seed``: the samples of one
    process), the FID statistics are summed over ranks (by torchmetrics, inside ``compute``), and
    ``fid`` and KID (``kid``, ``kid_std``) are logged (the configured sampler's output); with
    ``denoise_both`` also
    ``fid/denoised`` and ``fid/no_denoise``. ``sample/nfe``: network evaluations per sample.
    ``data_mean``: the centre of the sampler's Gaussian start (``init_mean='data'``), computed by
    the training workflow when it prepares the run; None when the sampler does not use it.
    """

    def __init__(
        self,
        sampler: Sampler,
        out_dir: str,
        every_n_epochs: int = 1,
        seed: int = 0,
        fid_samples: int = 1000,
        denoise_both: bool = False,
        fid=None,
        data_mean: torch.Tensor | None = None,
    ):
        if error := samples_interval_error(every_n_epochs, None):
            raise ValueError(error)
        if fid_samples < 2:
            raise ValueError(f"callbacks.samples.fid_samples={fid_samples} must be >= 2")
        self.sampler, self.out_dir, self.every_n_epochs, self.seed = sampler, Path(out_dir), every_n_epochs, seed
        self.fid_samples, self.denoise_both = fid_samples, denoise_both
        self.fid, self.data_mean = fid, data_mean

    def setup(self, trainer, pl_module, stage: str) -> None:
        error = samples_interval_error(self.every_n_epochs, trainer.check_val_every_n_epoch)
        if error:
            raise ValueError(error)

    def due(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self.due(trainer):
            return
        world, rank = trainer.world_size, trainer.global_rank
        total = self.fid_samples if self.fid is not None else self.sampler.n_samples
        mine = torch.arange(rank, total, world)  # per-sample seeds: the samples of one process, split
        net = pl_module.score_net
        was_training = net.training
        net.eval()
        start = time.perf_counter()
        res = self.sampler.draw(
            net,
            pl_module.sigmas,
            tuple(trainer.datamodule.data_shape),
            self.seed,
            pl_module.device,
            indices=mine,
            # one progress display at a time: no sampler bar inside the trainer's progress bar
            progress=trainer.is_global_zero and trainer.progress_bar_callback is None,
            denoise=True if (self.fid is not None and self.denoise_both) else None,
            data_mean=self.data_mean,
        )
        elapsed = time.perf_counter() - start
        net.train(was_training)
        pl_module.log("sample/time_s", elapsed, rank_zero_only=True)
        pl_module.log("sample/nfe", float(res.nfe), rank_zero_only=True)
        if self.fid is not None:
            scores = self.compute_fid(trainer, pl_module, res)
            for name, value in scores.items():
                pl_module.log(name, value, rank_zero_only=True)
            if trainer.is_global_zero:  # the console and <job>.log: one line per evaluation
                shown = ", ".join(f"{k} {float(v):.4g}" for k, v in scores.items())
                log.info("step %d (epoch %d), %d samples: %s", trainer.global_step, trainer.current_epoch, total, shown)
        configured = (
            res.samples if (self.sampler.denoise or not self.denoise_both or self.fid is None) else res.before_denoise
        )
        # the grid: samples 0 .. n_grid - 1; this process holds rank, rank + world, ... of them
        n_grid = min(self.sampler.n_samples, total)
        grid = configured[: len(range(rank, n_grid, world))]
        if world > 1:  # equal shapes for all_gather: pad the shorter shares, interleave, cut
            pad = -(-n_grid // world) - len(grid)
            grid = torch.cat([grid, grid.new_zeros((pad, *grid.shape[1:]))]) if pad else grid
            grid = pl_module.all_gather(grid).transpose(0, 1).flatten(0, 1)[:n_grid]
        if trainer.is_global_zero:
            path = self.out_dir / f"epoch{trainer.current_epoch:04d}_step{trainer.global_step:07d}.png"
            save_samples_figure(grid, path, trainer.datamodule)
            log_image_file(trainer, "samples", path)

    def compute_fid(self, trainer, pl_module, res) -> dict:
        """FID of every rank's samples together (the statistics are summed across ranks)."""
        self.fid.to(pl_module.device)
        sets = (
            {"fid/denoised": res.samples, "fid/no_denoise": res.before_denoise}
            if self.denoise_both
            else {"fid": res.samples}
        )
        out = {}
        for name, images in sets.items():
            self.fid.reset()
            self.fid.update(images.clamp(0, 1))  # the extractor runs fid.batch_size images at a time
            out.update(self.fid.scores(name))  # FID and KID; torchmetrics sums the states across DDP ranks here
        if self.denoise_both:
            out.update(configured_scores(out, self.sampler.denoise))
        return out


class PreemptionCheckpoint(Callback):
    """Preemption: on SIGTERM, Lightning stops after the current batch (on every rank) with
    ``SIGTERMException``; this saves ``dirpath/last.ckpt`` first, so the requeued job (or the same
    command run again) resumes there. Errors (e.g. a non-finite loss) save nothing: the last good
    checkpoint is kept. (Lightning's OnExceptionCheckpoint saves on any error and deletes its
    file at teardown, so it cannot serve here.)

    ``sigterm_received`` (given by the training workflow): whether a SIGTERM came while fit was
    starting, before Lightning installed its handler (which starts with a clean record); such a
    SIGTERM stops fit at the first batch like one during training.

    With several ranks, Lightning's handler (a broadcast inside the signal handler, and a stop
    decided by each rank alone) hangs when the ranks get the signal at different moments; here
    the handler only records it, and after each training batch the ranks agree (an all-reduce)
    to stop together after that batch when any of them received one."""

    def __init__(self, dirpath: str, sigterm_received=None):
        self.dirpath = Path(dirpath)
        self.sigterm_received = sigterm_received
        self._pending = False

    def on_train_start(self, trainer, pl_module) -> None:
        self._pending = bool(self.sigterm_received is not None and self.sigterm_received())
        handlers = getattr(signal.getsignal(signal.SIGTERM), "signal_handlers", None)
        if isinstance(handlers, list):  # Lightning's composed handler: replace its own part
            connector = trainer._signal_connector
            handlers[:] = [self._record if getattr(h, "__self__", None) is connector else h for h in handlers]

    def _record(self, signum, frame) -> None:
        log.info("[rank %d] SIGTERM: stopping after this batch", int(getattr(self, "_rank", 0)))
        self._pending = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._rank, pending = trainer.global_rank, self._pending
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([int(pending)], device=pl_module.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            pending = bool(flag.item())
        if pending:
            trainer._signal_connector.received_sigterm = True  # every rank stops after this batch

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.dirpath / "last.ckpt")


class ValLossBySigma(Callback):
    """After every validation (never the sanity check), on rank 0: the DSM loss of each noise
    level (``ScoreModel.val_loss_by_level``: every level with the same number of held-out images)
    keyed by sigma.

    - ``out_dir/val_loss_by_sigma.csv``: columns ``step, level, sigma, loss, n_images``, one row
      per level, appended at each validation (rows of a step at or after the current one, left
      by a run resumed from an earlier checkpoint, are replaced);
    - ``out_dir/val_loss_by_sigma.png``: loss against sigma (log axis), every validation so far as
      one curve, the latest highlighted;
    - W&B: a table (level, sigma, log10_sigma, loss, n_images) and a line plot of loss against
      log10(sigma) per validation, under ``val/loss_by_sigma`` (never one scalar per level).
    """

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    @property
    def csv_path(self) -> Path:
        return self.out_dir / FILENAME

    @property
    def png_path(self) -> Path:
        return self.out_dir / "val_loss_by_sigma.png"

    def on_validation_end(self, trainer, pl_module):
        loss = getattr(pl_module, "val_loss_by_level", None)
        if trainer.sanity_checking or loss is None or not trainer.is_global_zero:
            return
        step = trainer.global_step
        sigmas = pl_module.sigmas.detach().double().cpu().tolist()
        counts = pl_module.val_count_by_level.tolist()
        rows = [
            {
                "step": step,
                "level": i,
                "sigma": float(f"{sigmas[i]:.8g}"),
                "loss": float(loss[i]),
                "n_images": int(counts[i]),
            }
            for i in range(len(sigmas))
        ]
        history = [r for r in read_loss_by_sigma(self.csv_path) if int(r["step"]) < step] + rows
        write_loss_by_sigma(self.csv_path, history)
        curves = [(f"step {s}", [r["sigma"] for r in rs], [r["loss"] for r in rs]) for s, rs in by_step(history)]
        save_loss_by_sigma(curves, self.png_path, title="validation DSM loss per noise level", highlight_last=True)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                table = wandb.Table(
                    columns=["level", "sigma", "log10_sigma", "loss", "n_images"],
                    data=[[r["level"], r["sigma"], math.log10(r["sigma"]), r["loss"], r["n_images"]] for r in rows],
                )
                plot = wandb.plot.line(
                    table, "log10_sigma", "loss", title=f"validation DSM loss per noise level (step {step})"
                )
                logger.experiment.log(
                    {"val/loss_by_sigma": table, "val/loss_by_sigma_plot": plot, "trainer/global_step": step}
                )
