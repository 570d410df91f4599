"""Lightning callbacks: periodic sampling on the EMA weights, sample grids and FID."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..figures import save_samples_figure
from ..sampling import Sampler


def log_image_file(trainer: L.Trainer, key: str, path: Path) -> None:
    """Send an image file to every logger that takes images (W&B); the PNG stays in the run dir."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)


class SampleCallback(Callback):
    """Every ``every_n_epochs`` epochs, after validation and never during the sanity check:
    sample with the EMA weights, save a PNG grid of ``sampler.n_samples`` samples (a scatter plot
    for 2-D data) under ``out_dir``, and log it with the sampling time. With an FID (``fid``,
    given by the training workflow), ``fid_samples`` samples are drawn instead, split across DDP
    ranks (rank r draws its share with seed ``seed + r``), the FID statistics are summed over
    ranks, and ``fid`` is logged (the configured sampler's output); with ``denoise_both`` also
    ``fid/denoised`` and ``fid/no_denoise``.
    """

    def __init__(
        self,
        sampler: Sampler,
        out_dir: str,
        every_n_epochs: int = 1,
        seed: int = 0,
        fid_samples: int = 1000,
        fid_batch_size: int = 500,
        denoise_both: bool = False,
        fid=None,
    ):
        if every_n_epochs < 1:
            raise ValueError(f"callbacks.samples.every_n_epochs={every_n_epochs} must be >= 1")
        if fid_samples < 2:
            raise ValueError(f"callbacks.samples.fid_samples={fid_samples} must be >= 2")
        self.sampler, self.out_dir, self.every_n_epochs, self.seed = sampler, Path(out_dir), every_n_epochs, seed
        self.fid_samples, self.fid_batch_size, self.denoise_both = fid_samples, fid_batch_size, denoise_both
        self.fid = fid

    def due(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer, pl_module):
        if not self.due(trainer):
            return
        world, rank = trainer.world_size, trainer.global_rank
        total = self.fid_samples if self.fid is not None else self.sampler.n_samples
        n_local = len(range(rank, total, world))
        g = torch.Generator(device=pl_module.device).manual_seed(self.seed + rank)
        net = pl_module.score_net
        was_training = net.training
        net.eval()
        start = time.perf_counter()
        res = self.sampler(
            net,
            pl_module.sigmas,
            tuple(trainer.datamodule.data_shape),
            g,
            pl_module.device,
            n=n_local,
            progress=trainer.is_global_zero,
            denoise=True if (self.fid is not None and self.denoise_both) else None,
        )
        elapsed = time.perf_counter() - start
        net.train(was_training)
        pl_module.log("sample/time_s", elapsed, rank_zero_only=True)
        if self.fid is not None:
            for name, value in self.compute_fid(trainer, pl_module, res).items():
                pl_module.log(name, value, rank_zero_only=True)
        configured = (
            res.samples if (self.sampler.denoise or not self.denoise_both or self.fid is None) else res.before_denoise
        )
        grid = configured[: self.sampler.n_samples]
        if world > 1:
            grid = pl_module.all_gather(grid).flatten(0, 1)[: self.sampler.n_samples]
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
            for chunk in images.split(self.fid_batch_size):
                self.fid.update(chunk.clamp(0, 1))
            self.fid.all_reduce(lambda t: trainer.strategy.reduce(t, reduce_op="sum"))
            out[name] = self.fid.compute()
        if self.denoise_both:
            out["fid"] = out["fid/denoised"] if self.sampler.denoise else out["fid/no_denoise"]
        return out


class PreemptionCheckpoint(Callback):
    """Preemption: on SIGTERM, Lightning stops after the current batch (on every rank) with
    ``SIGTERMException``; this saves ``dirpath/last.ckpt`` first, so the requeued job (or the same
    command run again) resumes there. Errors (e.g. a non-finite loss) save nothing: the last good
    checkpoint is kept. (Lightning's OnExceptionCheckpoint saves on any error and deletes its
    file at teardown, so it cannot serve here.)"""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.dirpath / "last.ckpt")
