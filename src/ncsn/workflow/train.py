"""train.py's workflow: validate, build, (resume,) fit, write the final samples and results."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from ..callbacks import save_samples_figure
from ..figures import toy_figure
from ..data.base import DataError
from ..lit import ScoreModel
from .build import build_datamodule, build_net, build_sampler, build_sigmas, check_net_matches_data, user_errors
from .checkpoints import resolve_resume
from .evaluation import build_training_fid, check_fid_weights
from .config import ConfigError, atomic_write_text, record_run_config, validate_train


def hydra_job_info() -> tuple[list[str], str | None, str | None]:
    """(task overrides, W&B group, W&B name) of the current Hydra job."""
    if not HydraConfig.initialized():
        return [], None, None
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    multirun = str(hc.mode) == "RunMode.MULTIRUN"
    group = Path(hc.sweep.dir).name if multirun else None
    name = (hc.job.override_dirname or f"job{hc.job.num}") if multirun else None
    return overrides, group, name


def build_loggers(cfg: DictConfig, group: str | None, name: str | None) -> list:
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        extra = {}
        if key == "wandb":
            extra = {"group": node.group or group, "name": node.name or name}
        with user_errors(f"logger.{key}"):
            loggers.append(instantiate(node, **extra))
    return loggers


def train(cfg: DictConfig) -> dict:
    run_dir = Path(cfg.paths.run_dir)
    validate_train(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    overrides, group, name = hydra_job_info()

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    sigmas = build_sigmas(cfg)
    check_fid_weights(cfg)
    with user_errors("trainer"):
        trainer: L.Trainer = instantiate(cfg.trainer)  # only to resolve devices -> world size
    world_size = trainer.world_size
    datamodule = build_datamodule(cfg, world_size)
    net = build_net(cfg.model, sigmas)
    check_net_matches_data(net, tuple(datamodule.data_shape))
    try:
        if hasattr(datamodule, "check"):
            datamodule.check()
    except DataError as e:
        raise ConfigError(str(e)) from None
    ckpt_path = resolve_resume(cfg.ckpt_path, run_dir, net)
    fid = build_training_fid(cfg, datamodule)

    callbacks = []
    for key, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        with user_errors(f"callbacks.{key}"):
            callbacks.append(instantiate(node, fid=fid) if key == "samples" else instantiate(node))
    loggers = build_loggers(cfg, group, name)
    with user_errors("trainer"):
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                              default_root_dir=str(run_dir))

    if rank_zero_only.rank == 0:
        record_run_config(run_dir, resolved, overrides, cfg.allow_config_change)
    model = ScoreModel(net, lr=cfg.optim.lr, beta1=cfg.optim.beta1, beta2=cfg.optim.beta2, eps=cfg.optim.eps,
                       weight_decay=cfg.optim.weight_decay, amsgrad=cfg.optim.amsgrad,
                       ema_decay=cfg.optim.ema_decay, anneal_power=cfg.anneal_power,
                       on_nonfinite=cfg.on_nonfinite, config=resolved)
    status, error = "finished", None
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        if trainer.interrupted:
            status = "interrupted"
    except Exception as e:  # recorded in results.json, then re-raised for the exit status
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        results = {}
        if trainer.is_global_zero:
            results = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
            results.update(status=status, global_step=trainer.global_step, epoch=trainer.current_epoch)
            if error:
                results["error"] = error
            if status == "finished":
                results.update(final_samples(cfg, model, datamodule, run_dir))
            atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2, sort_keys=True))
        for logger in loggers:
            if hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
                import wandb

                wandb.finish(exit_code=0 if status == "finished" else 1)
    return results


def final_samples(cfg: DictConfig, model: ScoreModel, datamodule, run_dir: Path) -> dict:
    """Samples from the final EMA weights: samples/final.png; for 2-D mixtures the mode weights."""
    sampler = build_sampler(cfg.sampler)
    net = model.score_net.eval()
    g = torch.Generator(device=model.device).manual_seed(cfg.seed)
    start = time.perf_counter()
    res = sampler(net, model.sigmas, tuple(datamodule.data_shape), g, model.device)
    out = {"sample/final_time_s": time.perf_counter() - start}
    save_samples_figure(res.samples, run_dir / "samples" / "final.png", datamodule)
    mixture = getattr(datamodule, "mixture", None)
    if mixture is not None:
        w = mixture.mode_weights(res.samples.cpu())
        out["toy/mode_weights"] = [round(float(v), 4) for v in w]
        out["toy/weight_error"] = float((w - mixture.weights).abs().max())
        # NCSN Fig. 3: data, plain and annealed Langevin with exact scores, the learned score field
        weights = toy_figure(mixture, model.sigmas.cpu(), net.cpu(), run_dir / "samples" / "toy_figure.png",
                             n=sampler.n_samples, step_lr=sampler.step_lr, n_steps_each=sampler.n_steps_each,
                             seed=cfg.seed, init_low=sampler.init_low, init_high=sampler.init_high)
        out.update({f"toy/figure_{k}": v for k, v in weights.items()})
    return out
