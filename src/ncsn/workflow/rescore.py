"""sample.py mode=rescore: re-evaluate every finished job of a train.py sweep with more samples.

    python sample.py mode=rescore rescore.sweep_dir=outputs/multirun/train/<date>/<time> \\
        rescore.checkpoint=best eval.n_samples=2000 [rescore.bpd=true]

For each job directory below ``rescore.sweep_dir`` (``.hydra/config.yaml`` of a train.py run)
whose results.json says ``finished``: its ``checkpoints/best.ckpt`` or ``last.ckpt``
(``rescore.checkpoint``) is scored as ``mode=fid`` scores a checkpoint (``eval.n_samples``
samples from the per-sample seeds of ``seed``, the same for every job; FID, KID and FID's
interval), and with ``rescore.bpd=true`` also as ``mode=nll`` (bits/dim, ``nll.*``) where the
network is sigma-continuous. The results go beside the job, in ``<job>/rescore/<tag>/``:
results.json, rescore.log (the lines logged while scoring it) and samples.png (the first batch);
the job's own records (metrics.csv, results.json, checkpoints, .hydra) are only read.
``python -m ncsn.compare SWEEP_DIR`` then reads them (``compare.analysis``).

Re-running the same command continues: a job whose ``<tag>/results.json`` is complete with the
same settings is skipped. A job is scored in ``<job>/rescore/.<tag>.partial-<pid>`` and renamed
to ``<tag>`` once its results.json is written, so a killed re-score leaves either a complete
``<tag>`` or a partial folder, which the next run removes and redoes. One re-score per job at a
time: ``<job>/rescore/run.lock`` (``runlock.RunLock``). Refused before any work, in one line: a
missing or non-sweep directory, a checkpoint a finished job lacks, an existing ``<tag>`` made
with other settings, ``rescore.bpd=true`` when no job's network is sigma-continuous.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from omegaconf import DictConfig, OmegaConf

from ..core.checks import unwritable
from ..metrics.likelihood import check_continuous
from .build import build_net, build_sigmas, check_sampler_fits
from .checkpoints import load_checkpoint
from .config import ConfigError, atomic_write_text, need, validate_sigmas, write_hydra_record
from .overrides import check_overrides_honoured
from .runlock import RunLock
from .sample import command_line_keys, job_sampler_cfg, load_run, refused_leaves_nothing, resolve_device
from .sample_modes import ModeContext, check_nll_images, run_fid, run_nll
from .sweep_jobs import _SAFE, read_status, saved_config

log = logging.getLogger(__name__)

FOLDER = "rescore"  # <job>/rescore/<tag>/
CHECKPOINTS = {"best": "best.ckpt", "last": "last.ckpt"}


@dataclass
class SweepJob:
    path: Path
    name: str  # relative to the sweep directory
    status: str  # results.json's status ("" without one)
    continuous: bool = False

    @property
    def finished(self) -> bool:
        return self.status == "finished"


def validate_rescore(cfg: DictConfig) -> Path:
    """mode=rescore's own keys; the sweep directory."""
    if not OmegaConf.is_missing(cfg, "ckpt_path") and cfg.ckpt_path is not None:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r} is invalid with mode=rescore: leave it out "
            "(the checkpoints are those of rescore.sweep_dir's jobs, rescore.checkpoint)"
        )
    need(
        cfg, "rescore.sweep_dir", lambda v: isinstance(v, str) and v, "a train.py sweep directory (its hydra.sweep.dir)"
    )
    need(cfg, "rescore.checkpoint", lambda v: v in CHECKPOINTS, "'best' or 'last'")
    need(cfg, "rescore.bpd", lambda v: isinstance(v, bool), "true or false")
    ok_tag = lambda v: v is None or (isinstance(v, str) and _SAFE.fullmatch(v) and not v.startswith("."))  # noqa: E731
    need(cfg, "rescore.tag", ok_tag, "null or a folder name (letters, digits, . _ = , + -; not starting with '.')")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("mode=rescore runs on one process (WORLD_SIZE > 1): run it without torchrun")
    sweep = Path(cfg.rescore.sweep_dir)
    if not sweep.is_dir():
        what = "does not exist" if not sweep.exists() else "is not a directory"
        raise ConfigError(f"rescore.sweep_dir={str(sweep)!r} {what}")
    return sweep


def tag_of(cfg: DictConfig) -> str:
    """``<checkpoint>-n<eval.n_samples>`` (``-bpd`` with bits/dim), or ``rescore.tag``."""
    return cfg.rescore.tag or f"{cfg.rescore.checkpoint}-n{cfg.eval.n_samples}" + ("-bpd" if cfg.rescore.bpd else "")


def settings_of(cfg: DictConfig) -> dict:
    """What a re-score depends on (recorded in its results.json; a tag re-used with other settings is refused)."""
    given = cast(dict, OmegaConf.to_container(cfg.sampler, resolve=True))
    explicit = command_line_keys("sampler")
    s = {
        "checkpoint": cfg.rescore.checkpoint,
        "n_samples": cfg.eval.n_samples,
        "seed": cfg.seed,
        "denoise_both": cfg.eval.denoise_both,
        "sampler": {k: v for k, v in given.items() if v is not None or k in explicit},
        "bpd": cfg.rescore.bpd,
        "nll": OmegaConf.to_container(cfg.nll, resolve=True) if cfg.rescore.bpd else None,
    }
    return json.loads(json.dumps(s))  # as read back from results.json


def training_jobs(sweep: Path) -> list[SweepJob]:
    """The train.py job directories below ``sweep`` (a ``trainer`` and a ``model`` node in
    ``.hydra/config.yaml``), by name; ``sweep`` itself when it is one."""
    jobs = []
    for cfg_file in sorted(sweep.rglob(".hydra/config.yaml")):
        job = cfg_file.parent.parent
        if FOLDER in job.relative_to(sweep).parts:
            continue
        saved = saved_config(job)
        if isinstance(saved, dict) and "trainer" in saved and "model" in saved:
            name = str(job.relative_to(sweep)) if job != sweep else "."
            jobs.append(SweepJob(job, name, str(read_status(job).get("status", ""))))
    return jobs


def _is_continuous(job: Path) -> bool:
    """Whether the job's network takes any sigma (built from its saved config, no weights)."""
    train_cfg = OmegaConf.create(saved_config(job))
    validate_sigmas(train_cfg)
    net = build_net(train_cfg.model, build_sigmas(train_cfg))
    try:
        check_continuous(net)
    except ValueError:
        return False
    return True


def preflight(cfg: DictConfig, sweep: Path, tag: str, settings: dict) -> list[SweepJob]:
    """The finished jobs to score; every refusal before any work."""
    jobs = training_jobs(sweep)
    if not jobs:
        raise ConfigError(
            f"rescore.sweep_dir={str(sweep)!r} is invalid: no train.py job directory below it "
            "(.hydra/config.yaml of a train.py run); give the hydra.sweep.dir of a train.py -m sweep"
        )
    done = [j for j in jobs if j.finished]
    if not done:
        raise ConfigError(f"rescore.sweep_dir={str(sweep)!r}: none of its {len(jobs)} train.py jobs has finished")
    ckpt = CHECKPOINTS[cfg.rescore.checkpoint]
    for j in done:
        if not (j.path / "checkpoints" / ckpt).is_file():
            hint = (
                " (best.ckpt is kept when training computes FID: use rescore.checkpoint=last)"
                if ckpt == "best.ckpt"
                else ""
            )
            raise ConfigError(
                f"rescore.checkpoint={cfg.rescore.checkpoint} is invalid: job {j.name} has no checkpoints/{ckpt}{hint}"
            )
        old = read_status(j.path / FOLDER / tag)
        if old.get("status") == "finished" and old.get("rescore") != settings:
            differ = sorted(k for k in settings if (old.get("rescore") or {}).get(k) != settings[k])
            raise ConfigError(
                f"rescore.tag={tag}: {j.path / FOLDER / tag} holds a re-score with other settings "
                f"({', '.join(differ)}); set another rescore.tag"
            )
        problem = unwritable(j.path / FOLDER, "rescore.sweep_dir")
        if problem:
            raise ConfigError(problem)
    if cfg.rescore.bpd:
        for j in done:
            j.continuous = _is_continuous(j.path)
        if not any(j.continuous for j in done):
            raise ConfigError(
                "rescore.bpd=true is invalid for this sweep: no job's network is sigma-continuous "
                "(bits/dim needs model.conditioning=sigma|none or NCSNv2); set rescore.bpd=false"
            )
        first = next(j for j in done if j.continuous)
        _, _, dm = load_run(str(first.path / "checkpoints" / ckpt), "cpu")
        check_nll_images(cfg.nll.n_images, dm.load_split(dm.val_split), dm.val_split)  # before any scoring
    return done


class _JobLog:
    """The root logger's records also into ``path`` while a job is scored (Hydra's line format)."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))

    def __enter__(self):
        logging.getLogger().addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()


def score_job(cfg: DictConfig, job: SweepJob, stage: Path, device: str, settings: dict) -> dict:
    """One job's checkpoint: mode=fid (and mode=nll) into ``stage``; results.json's dict."""
    path = job.path / "checkpoints" / CHECKPOINTS[cfg.rescore.checkpoint]
    ckpt = load_checkpoint(str(path))
    train_cfg, net, datamodule = load_run(str(path), device, ckpt)
    sampler_cfg = job_sampler_cfg(cfg, train_cfg, net)
    sampler = check_sampler_fits(sampler_cfg, net, net.sigmas)
    resolved = cast(dict, OmegaConf.to_container(cfg, resolve=True))
    resolved.update(sampler=OmegaConf.to_container(sampler_cfg), train_config=OmegaConf.to_container(train_cfg))
    check_overrides_honoured(resolved)  # every key the user set holds its value, or exit 2
    step = int(ckpt.get("global_step", -1))
    log.info(
        "re-scoring %s: %s (step %d), %d samples, seed %d", job.name, path.name, step, cfg.eval.n_samples, cfg.seed
    )
    ctx = ModeContext(cfg, train_cfg, net, datamodule, sampler, stage, device)
    results = run_fid(ctx)
    if cfg.rescore.bpd and job.continuous:
        results.update({k: v for k, v in run_nll(ctx).items() if k not in ("nfe", "time_s")})
    elif cfg.rescore.bpd:
        results["bpd_skipped"] = "the network is conditioned on its training levels (not sigma-continuous)"
    shown = ("fid", "kid", "kid_std", "fid_ci_low", "fid_ci_high", "bpd", "bpd_se")
    log.info("%s: %s", job.name, ", ".join(f"{k} {results[k]:.4g}" for k in shown if k in results))
    results.update(
        status="finished",
        mode="rescore",
        ckpt_path=str(path),
        checkpoint=cfg.rescore.checkpoint,
        global_step=step,
        epoch=ckpt.get("epoch"),
        rescore=settings,
    )
    return results


def rescore_job(cfg: DictConfig, job: SweepJob, tag: str, device: str, settings: dict) -> str:
    """Score one job unless its ``<tag>`` is complete; 're-scored' or 'skipped'."""
    folder = job.path / FOLDER
    target = folder / tag
    if read_status(target).get("status") == "finished":
        log.info("%s: already re-scored (%s), skipped", job.name, target)
        return "skipped"
    for stale in [target, *folder.glob(f".{tag}.partial-*")]:  # a killed re-score's leftovers
        shutil.rmtree(stale, ignore_errors=True)
    stage = folder / f".{tag}.partial-{os.getpid()}"
    stage.mkdir(parents=True)
    try:
        with _JobLog(stage / "rescore.log"):
            results = score_job(cfg, job, stage, device, settings)
        atomic_write_text(stage / "results.json", json.dumps(results, indent=2, sort_keys=True))
        os.rename(stage, target)  # the complete folder appears at once
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return "re-scored"


def rescore(cfg: DictConfig) -> dict:
    """mode=rescore (validated by ``config.validate_sample``): every finished job of
    ``rescore.sweep_dir``; sample.py's own run directory gets the summary (results.json)."""
    sweep = validate_rescore(cfg)
    out_dir = Path(cfg.out_dir)
    problem = unwritable(out_dir, "out_dir")
    if problem:
        raise ConfigError(problem)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    tag, settings = tag_of(cfg), settings_of(cfg)
    jobs = preflight(cfg, sweep, tag, settings)
    locks = []
    outcome = {}
    try:
        for j in jobs:  # one re-score per job at a time; refused in one line before any work
            locks.append(RunLock(j.path / FOLDER).acquire())
        with refused_leaves_nothing(out_dir):
            resolved = OmegaConf.to_container(cfg, resolve=True)
            atomic_write_text(out_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))
            write_hydra_record(out_dir)
        for j in jobs:
            outcome[j.name] = rescore_job(cfg, j, tag, device, settings)
    finally:
        for lock in locks:
            lock.release()
    unfinished = [j.name for j in training_jobs(sweep) if not j.finished]
    outcome.update({name: "not finished: not re-scored" for name in unfinished})
    counts = {v: sum(1 for x in outcome.values() if x == v) for v in sorted(set(outcome.values()))}
    log.info("rescore %s: %s", tag, ", ".join(f"{n} {k}" for k, n in counts.items()))
    for name, what in outcome.items():
        log.info("  %s  %s", name, what)
    log.info("compare: python -m ncsn.compare %s", sweep)
    results = {"status": "finished", "mode": "rescore", "sweep_dir": str(sweep), "tag": tag, "jobs": outcome}
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, sort_keys=True))
    return results
