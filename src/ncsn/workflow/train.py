"""train.py's workflow: validate, build, (resume,) fit, write the final samples and results."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ..core.speed import to_channels_last
from ..data.base import DataError
from ..sampling import Sampler
from ..training.checkpoint_io import AtomicCheckpointIO
from ..training.guards import NonFiniteLossError
from ..training.loggers import NcsnWandbLogger, trim_metrics
from ..training.resume import PROGRESS_KEY
from ..training.score_model import ScoreModel
from . import ranks
from .build import (
    apply_noise_design,
    build_datamodule,
    build_loggers,
    build_model,
    build_net,
    build_sampler,
    build_sigmas,
    check_net_matches_data,
    check_sampler_fits,
    sampler_data_mean,
    user_errors,
    world_size,
)
from .checkpoints import load_checkpoint, resolve_resume
from .config import ConfigError, atomic_write_text, record_run_config, validate_train
from .console import console_callbacks
from .entry import Preempted, RunInterrupted, SigtermGuard
from .evaluation import build_training_fid, check_fid_weights, check_val_bpd
from .overrides import check_overrides_honoured, settings_without_effect
from .ranks import DDP_LAUNCH_ENV, is_run_dir_writer, pin_ddp_children_to_this_job, restore_env
from .resources import check_batch_fits, check_resources
from .run_record import Outcome, final_validation_done, write_results
from .run_summary import best_metric, record_preempted_start_up
from .runlock import RunLock, remove_stale_temp_files
from .search import trial_pruning
from .sweep_jobs import finished_job
from .wandb_run import job_identity

log = logging.getLogger(__name__)


def hydra_job_info() -> tuple[list[str], str | None, str | None]:
    """(task overrides, W&B group, W&B name) of the current Hydra job (``wandb_run.job_identity``)."""
    if not HydraConfig.initialized():
        return [], None, None
    identity = job_identity()
    return list(HydraConfig.get().overrides.task), identity["group"], identity["name"]


def train(cfg: DictConfig, sigterm_before=()) -> dict:
    """train.py: validate, lock the run directory, prepare the run, build the trainer, fit and
    record. Returns results.json's dict. A SIGTERM at any moment (``sigterm_before``: the ones
    train.py recorded before this call) ends the run as ``preempted`` (``entry.SigtermGuard``)."""
    saved_env = {k: os.environ.get(k) for k in DDP_LAUNCH_ENV}
    lock = None
    try:
        # a DDP child only records a SIGTERM before training: rank 0 waits for it in the rendezvous
        with SigtermGuard(sigterm_before, raising=is_run_dir_writer()) as guard:
            try:
                validate_train(cfg)  # the config alone: nothing of the run directory is read before the lock
                lock = take_run_dir(cfg)
                run = prepare_run(cfg)
                check_overrides_honoured(run.resolved)  # every key the user set holds its value, or exit 2
                notes = settings_without_effect(run.resolved)  # honoured, but used by nothing the metrics see
                for note in notes:
                    log.warning(note)
                notes += settle_resume(run, writer=lock is not None)
                trainer = build_trainer(cfg, run, guard.was_received)
                if (done := finished_job(run.run_dir, run.resolved)) is not None:
                    return done  # a finished job of a re-run sweep: skipped (sweep_jobs)
            except Preempted:
                guard.phase("recording", raising=False)
                return record_preempted_start_up(Path(cfg.paths.run_dir), lock)
            return fit_and_record(cfg, run, trainer, guard, notes)
    except Preempted:  # the SIGTERM came before the guard's first line ran (train.py recorded it)
        return record_preempted_start_up(Path(cfg.paths.run_dir), lock)
    finally:
        if lock is not None:
            lock.release()
        restore_env(saved_env)


def take_run_dir(cfg: DictConfig) -> RunLock | None:
    """Before anything of the run directory is read or written: lock it (one writer per run
    directory; other ranks of this run take no lock; an unwritable directory is refused), remove
    the temporary files killed writers left."""
    if not is_run_dir_writer():
        return None
    run_dir = Path(cfg.paths.run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        remove_stale_temp_files(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def settle_resume(run: Run, writer: bool) -> list[str]:
    """Every rank: a checkpoint at ``trainer.max_steps`` whose validation was still due (a kill
    during the final validation) runs that validation before fit ends (``ScoreModel.
    final_validation_pending``), unless results.json shows a fit that got past it
    (``run_record.final_validation_done``). The writer (under the lock) moves metrics.csv's rows past the
    checkpoint resumed from to metrics.dropped.csv (``training.loggers.trim_metrics``). A
    checkpoint without our progress record (``training.resume.PROGRESS_KEY``: one of an older
    version) is resumed with a warning (returned, for results.json): Lightning's own loop
    counters place it."""
    step, pending, notes = 0, False, []
    if run.ckpt_path is not None:
        ckpt = load_checkpoint(run.ckpt_path)
        step = int(ckpt.get("global_step", 0))
        progress = ckpt.get(PROGRESS_KEY)
        pending = bool((progress or {}).get("val_pending", False))
        max_steps = run.resolved.get("trainer", {}).get("max_steps")
        if pending and max_steps is not None and 0 <= max_steps <= step:
            pending = run.model.final_validation_pending = not final_validation_done(run.run_dir, step)
        if progress is None and writer:
            notes.append(
                f"ckpt_path={run.ckpt_path!r} has no {PROGRESS_KEY} record: resumed from Lightning's loop "
                "counters, so the epoch count, the batches left in the epoch and a validation due at the "
                "checkpoint may differ from a run never stopped (weights, optimizer and random states are exact)"
            )
            log.warning("resume: %s", notes[-1])
    if not writer:
        return notes
    dropped = trim_metrics(run.run_dir / "metrics.csv", step, pending)
    if dropped:
        log.info("resume at step %d: moved %d rows of metrics.csv past it to metrics.dropped.csv", step, dropped)
    return notes


@dataclass
class Run:
    """Everything a training run is made of before the Trainer exists."""

    run_dir: Path
    world_size: int
    datamodule: L.LightningDataModule
    model: ScoreModel
    fid: object  # the training FID (None without one)
    resolved: dict  # the validated, resolved config (saved with the run and every checkpoint)
    ckpt_path: str | None  # the checkpoint to resume from
    sampler: Sampler  # the configured sampler (samples callback, final samples)
    overrides: list = field(default_factory=list)
    noise_design: dict = field(default_factory=dict)
    data_mean: torch.Tensor | None = None  # its Gaussian start's centre (init_mean=data), computed once


def prepare_run(cfg: DictConfig) -> Run:
    """Build the data, the noise levels, the network and the model of a validated config (under
    the run lock). Nothing is written to the run directory here: a bad input stops before any file
    exists. Sizes that cannot fit are refused before they are allocated (``resources``)."""
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    world = world_size(cfg.trainer)
    datamodule = build_datamodule(cfg, world)
    datamodule.shuffle_seed = cfg.seed
    if cfg.sigmas.kind != "auto":  # auto: num_scales is known once the data is read (below)
        check_resources(cfg, world, tuple(datamodule.data_shape))
        build_sigmas(cfg)  # bad noise levels stop the run before anything else is built
    build_sampler(cfg.sampler)  # validates sampler.* before the data is read
    check_fid_weights(cfg)
    design = {}
    try:
        if hasattr(datamodule, "check"):
            datamodule.check()
        if not getattr(datamodule, "download", False):
            datamodule.setup("fit")  # a malformed or refused data file stops here, before anything is written
        if getattr(datamodule, "train_set", None) is not None:
            check_batch_fits(cfg.data.batch_size, world, len(datamodule.train_set))
        if cfg.sigmas.kind == "auto":
            design = apply_noise_design(cfg, datamodule)
            check_resources(cfg, world, tuple(datamodule.data_shape))
    except DataError as e:
        raise ConfigError(str(e)) from None
    sigmas = build_sigmas(cfg)
    resolved = cast(dict, OmegaConf.to_container(cfg, resolve=True))
    net = build_net(cfg.model, sigmas)
    check_net_matches_data(net, tuple(datamodule.data_shape))
    sampler = check_sampler_fits(cfg.sampler, net, sigmas)  # e.g. num_steps with one level: refused before training
    data_mean = sampler_data_mean(sampler, datamodule)
    check_val_bpd(cfg, net, datamodule)  # held-out bits/dim: sigma-continuous nets only
    if cfg.speed.channels_last:
        to_channels_last(net)  # before the EMA copy is made, so it inherits the layout
    run_dir = Path(cfg.paths.run_dir)
    ckpt_path = resolve_resume(cfg.ckpt_path, run_dir, net)
    fid = build_training_fid(cfg, datamodule)
    model = build_model(cfg, net, resolved)
    overrides = hydra_job_info()[0]
    return Run(run_dir, world, datamodule, model, fid, resolved, ckpt_path, sampler, overrides, design, data_mean)


def build_trainer(cfg: DictConfig, run: Run, sigterm_received=None) -> L.Trainer:
    """The Trainer with the configured callbacks (the samples callback gets the training FID, the
    preemption callback ``sigterm_received``), loggers and atomic checkpoint writes."""
    callbacks = []
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        extra = {"fid": run.fid, "sampler": run.sampler, "data_mean": run.data_mean} if key == "samples" else {}
        if key == "preemption" and sigterm_received is not None:
            extra = {"sigterm_received": sigterm_received}
        with user_errors(f"callbacks.{key}"):
            callbacks.append(instantiate(node, **extra))
    pruning = trial_pruning(cfg.get("objective") or "fid")  # a trial of an Optuna search: after samples
    if pruning is not None:
        callbacks.append(pruning)
    callbacks += console_callbacks(
        cfg.trainer.get("enable_progress_bar", True), cfg.trainer.get("enable_model_summary", True)
    )
    _, group, name = hydra_job_info()
    loggers = build_loggers(cfg, group, name)
    best = best_metric(run.run_dir / "metrics.csv")  # a resume: the rows up to its step (take_run_dir)
    for logger in loggers:
        if best and isinstance(logger, NcsnWandbLogger):
            logger.continue_best(best["fid/best"], best["fid/best_step"])
    with user_errors("trainer"):
        trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers or False,
            default_root_dir=str(run.run_dir),
            plugins=[AtomicCheckpointIO()],
        )
    if trainer.world_size != run.world_size:  # the data module was built for run.world_size
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices!r} x trainer.num_nodes={cfg.trainer.num_nodes} gives "
            f"{trainer.world_size} processes, not the {run.world_size} expected from the config"
        )
    return trainer


def fit_and_record(cfg: DictConfig, run: Run, trainer: L.Trainer, guard: SigtermGuard, notes=()) -> dict:
    """Record the config, fit (resuming from ``run.ckpt_path``), then write results.json and the
    final samples (on rank 0) and close the loggers and the process group. A SIGTERM during fit
    is Lightning's (``PreemptionCheckpoint``); one during the final samples stops them; either
    way results.json says ``preempted`` and where (``preempted_in``). A Ctrl-C during the final
    samples stops them too: results.json says ``interrupted`` (``interrupted_in``), exit 130."""
    record_config(cfg, run)
    pin_ddp_children_to_this_job(run.run_dir)
    outcome = Outcome()
    guard.phase("training", raising=False)  # Lightning stops fit after the batch (PreemptionCheckpoint)
    try:
        run_fit(run, trainer, guard, outcome)
    finally:
        guard.phase("recording", raising=False)
        results = write_results(cfg, run, trainer, guard, outcome, notes) if trainer.is_global_zero else {}
        close_run(trainer, outcome.status)
    if (outcome.status, outcome.where) == ("interrupted", "final samples"):  # exit 130, recorded
        raise RunInterrupted(
            f"interrupted in the final samples at global step {trainer.global_step}; rerun to draw them"
        )
    return results


def record_config(cfg: DictConfig, run: Run) -> None:
    """Rank 0 records the run's config (a resumed run's must match, ``config.record_run_config``);
    each other rank records what it runs in its own file (shared files are rank 0's)."""
    rank = rank_zero_only.rank  # type: ignore[attr-defined]  # set on the function by Lightning at import
    if rank == 0:
        record_run_config(run.run_dir, run.resolved, run.overrides, cfg.allow_config_change)
    else:
        atomic_write_text(
            run.run_dir / ".hydra" / f"config.rank{rank}.yaml", OmegaConf.to_yaml(OmegaConf.create(run.resolved))
        )


def run_fit(run: Run, trainer: L.Trainer, guard: SigtermGuard, outcome: Outcome) -> None:
    """``trainer.fit``, resuming from ``run.ckpt_path``; ``outcome`` says how it ended. A SIGTERM
    (last.ckpt saved by PreemptionCheckpoint) ends it as preempted; a non-finite loss, Ctrl-C and
    any other error are recorded and raised (exit 3, 130 and 1)."""
    try:
        with warnings.catch_warnings(), ranks.sigint_to_rank_zero(trainer):  # DDP: Ctrl-C is rank 0's
            # our training loaders resume mid-epoch exactly (data.base.resume_position);
            # Lightning's warning that they cannot is about loaders without that
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
            trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=run.ckpt_path, weights_only=True)
        outcome.status, outcome.where = fit_status(trainer, guard)
    except SIGTERMException:
        outcome.status, outcome.where = "preempted", "training"  # exit 0, rerun to resume
        log.warning(
            "SIGTERM: saved %s; run the same command again to resume", run.run_dir / "checkpoints" / "last.ckpt"
        )
    except NonFiniteLossError as e:  # exit 3
        outcome.failed("diverged", e)
        raise
    except (KeyboardInterrupt, SystemExit) as e:
        # Ctrl-C: Lightning's handler ends in sys.exit(1); any other exit is a failure
        if isinstance(e, KeyboardInterrupt) or trainer.interrupted:
            outcome.status = "interrupted"
            raise RunInterrupted(f"interrupted at global step {trainer.global_step}; rerun to resume") from None
        outcome.failed("failed", e)
        raise
    except Exception as e:  # recorded in results.json, then re-raised for the exit status
        outcome.failed("failed", e)
        raise


def fit_status(trainer: L.Trainer, guard: SigtermGuard) -> tuple[str, str | None]:
    """(status, where) of a fit that returned: interrupted, pruned (an Optuna trial stopped early on
    its intermediate FID: no final samples), preempted in training (a SIGTERM after the last
    batch's check: fit ended, the final samples do not run) or finished."""
    if trainer.interrupted:
        return "interrupted", None
    if any(getattr(c, "pruned", False) for c in trainer.callbacks):  # type: ignore[attr-defined]  # set by Lightning
        return "pruned", None
    if guard.received:
        return "preempted", "training"
    return "finished", None


def close_run(trainer: L.Trainer, status: str) -> None:
    """Finish the W&B run (jobs of a sweep must not bleed into each other) and the process group
    (the next job of a sweep starts its own)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish(exit_code=0 if status in ("finished", "preempted", "pruned") else 1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
