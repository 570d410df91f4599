"""What a training run records when its fit has ended (train.py, rank 0): results.json (the last
metrics, how the fit ended, the progress, the best FID, the final samples of a finished fit) and
its copy sent to W&B."""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from ..core.figures import save_samples_figure
from ..sampling import Sampler
from ..training.loggers import log_run_end
from ..training.score_model import ScoreModel
from .config import atomic_write_text
from .entry import Preempted, SigtermGuard
from .ranks import ranks_progress
from .run_summary import best_metric
from .sweep_jobs import read_status
from .toy_results import mode_weight_results, toy_figure_results
from .wandb_run import continue_ranks_run

if TYPE_CHECKING:
    from .train import Run

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How the fit ended: results.json's ``status``, ``error`` and ``<status>_in`` (``where``)."""

    status: str = "finished"
    error: str | None = None
    where: str | None = None

    def failed(self, status: str, e: BaseException) -> None:
        self.status, self.error = status, f"{type(e).__name__}: {e}"


def write_results(
    cfg: DictConfig, run: Run, trainer: L.Trainer, guard: SigtermGuard, outcome: Outcome, notes=()
) -> dict:
    """results.json (``fit_results``; a finished fit adds its final samples, which a SIGTERM or
    Ctrl-C stops: status ``preempted`` or ``interrupted``, ``preempted_in`` / ``interrupted_in``
    says where), then its copy to W&B."""
    results = fit_results(run, trainer, outcome, notes)
    step = results["global_step"]
    if outcome.status == "finished":
        results.update(draw_final_samples(cfg, run, trainer, guard, outcome))
        results["status"] = outcome.status
    if outcome.where:  # preempted_in / interrupted_in
        results[f"{outcome.status}_in"] = outcome.where
    atomic_write_text(run.run_dir / "results.json", json.dumps(results, indent=2, sort_keys=True))
    try:  # final samples, toy figure and results.json's numbers to W&B
        continue_ranks_run(trainer.loggers)  # ddp_fork: rank 0's W&B run, not a second one
        log_run_end(trainer.loggers, run.run_dir, results, step)
    except Exception as e:  # noqa: BLE001 - the run's own record is written; W&B is a copy
        log.warning("could not send the end of the run to W&B: %s: %s", type(e).__name__, e)
    return results


def fit_results(run: Run, trainer: L.Trainer, outcome: Outcome, notes=()) -> dict:
    """The metrics last logged, the status (and error), the progress, the best FID, the noise
    design and the run's warnings (``notes``, the loss's)."""
    metrics = trainer.callback_metrics.items()
    # after a resume, metrics not logged again yet come from metrics.csv (their last value)
    results = last_logged_metrics(run.run_dir / "metrics.csv") if run.ckpt_path else {}
    results.update({k: float(v) for k, v in metrics if torch.is_tensor(v) and v.numel() == 1})
    # one step convention (training.loggers.LOGGING_STEP_OFFSET): global_step = optimizer steps
    # done; epoch = the 0-based index of the last epoch that ran, as in metrics.csv and file names
    last_epoch = max(trainer.fit_loop.epoch_progress.current.ready - 1, 0)  # stopped mid-epoch too
    step, last_epoch = ranks_progress(trainer, run.run_dir, trainer.global_step, last_epoch)
    results.update(status=outcome.status, global_step=step, epoch=last_epoch)
    results.update(best_metric(run.run_dir / "metrics.csv", "fid"))  # fid/best, fid/best_step
    results.update({f"noise_design/{k}": v for k, v in run.noise_design.items()})
    if outcome.error:
        results["error"] = outcome.error
    notes = [*notes, *([run.model.loss_warning] if run.model.loss_warning else [])]
    if notes:
        results["warnings"] = notes
    return results


def draw_final_samples(cfg: DictConfig, run: Run, trainer: L.Trainer, guard: SigtermGuard, outcome: Outcome) -> dict:
    """``final_samples`` where the model trained; a SIGTERM or Ctrl-C stops them (``outcome``:
    preempted or interrupted in the final samples; {} returned; the caller exits 0 or 130)."""
    try:
        guard.phase("final samples", raising=True)
        # Lightning's teardown has moved the module back to the CPU: sample where it trained
        device = trainer.strategy.root_device
        out = final_samples(cfg, run.model, run.datamodule, run.run_dir, device, run.sampler, run.data_mean)
        guard.phase("recording", raising=False)
        return out
    except Preempted:
        outcome.status, outcome.where = "preempted", "final samples"
        log.warning("SIGTERM during the final samples; run the same command again to draw them")
        return {}
    except KeyboardInterrupt:
        guard.phase("recording", raising=False)
        outcome.status, outcome.where = "interrupted", "final samples"
        log.warning("Ctrl-C during the final samples; run the same command again to draw them")
        return {}


def final_validation_done(run_dir: Path, step: int) -> bool:
    """Whether results.json records a fit that ended at ``step`` after its last validation: finished,
    or stopped in the final samples (which come after it). Without such a record (a kill during
    that validation, or before results.json was written) a resume runs it again."""
    results = read_status(run_dir)
    where = (results.get("preempted_in"), results.get("interrupted_in"))
    return results.get("global_step") == step and (results.get("status") == "finished" or "final samples" in where)


def last_logged_metrics(path: Path) -> dict:
    """The last value of each metric column of a metrics.csv ({} without one)."""
    if not path.is_file():
        return {}
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k not in ("epoch", "step") and k and v not in (None, ""):
                    try:
                        out[k] = float(v)
                    except ValueError:
                        pass
    return out


def final_samples(
    cfg: DictConfig, model: ScoreModel, datamodule, run_dir: Path, device: torch.device, sampler: Sampler, data_mean
) -> dict:
    """Samples from the final EMA weights on ``device``: samples/final.png (and samples/final.npz with
    ``eval.save_npz``); for 2-D mixtures the mode weights and NCSN Fig. 3 (samples/toy_figure.png)."""
    model.to(device)
    net = model.score_net.eval()
    start = time.perf_counter()
    # per-sample seeds: the same samples as sample.py with seed=cfg.seed draws from this checkpoint
    res = sampler.draw(net, model.sigmas, tuple(datamodule.data_shape), cfg.seed, device, data_mean=data_mean)
    out = {"sample/final_time_s": time.perf_counter() - start, "sample/final_device": str(device)}
    save_samples_figure(res.samples, run_dir / "samples" / "final.png", datamodule)
    if cfg.eval.save_npz:  # the layout of sample.py's samples.npz: N x C x H x W in [0, 1] (or N x 2)
        samples = res.samples.float().cpu()
        samples = samples.clamp(0, 1) if samples.dim() > 2 else samples
        np.savez(run_dir / "samples" / "final.npz", samples=samples.numpy())
    mixture = getattr(datamodule, "mixture", None)
    if mixture is not None:
        out.update(mode_weight_results(mixture, res.samples))
        figure = run_dir / "samples" / "toy_figure.png"
        out.update(toy_figure_results(mixture, sampler, net, cfg.seed, res.samples, figure))
    return out
