"""sample.py's workflow: a checkpoint (and its saved config) -> the sampler -> PNG grid and .npz."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ..figures import save_samples_figure
from ..speed import nnpack_convs
from .build import build_datamodule, build_net, build_sampler, build_sigmas, check_net_matches_data
from .checkpoints import check_architecture, load_checkpoint, net_state_dict
from .config import ConfigError, atomic_write_text, validate_sample, validate_sigmas
from .sample_modes import MODES


def load_run(ckpt_path: str, device: str = "cpu"):
    """(saved training config, EMA network in eval mode, data module) from a checkpoint alone."""
    ckpt = load_checkpoint(ckpt_path)
    saved = (ckpt.get("hyper_parameters") or {}).get("config")
    if not saved:
        raise ConfigError(
            f"ckpt_path={ckpt_path!r}: the checkpoint carries no saved config "
            "(was it written by this project's train.py?)"
        )
    train_cfg = OmegaConf.create(saved)
    validate_sigmas(train_cfg)
    sigmas = build_sigmas(train_cfg)
    net = build_net(train_cfg.model, sigmas)
    weights = net_state_dict(ckpt, prefer_ema=True)
    check_architecture(net, weights, ckpt_path)
    net.load_state_dict(weights)
    datamodule = build_datamodule(train_cfg, 1)
    check_net_matches_data(net, tuple(datamodule.data_shape))
    return train_cfg, net.to(device).eval(), datamodule


def merged_sampler_cfg(train_cfg: DictConfig, overrides: DictConfig) -> DictConfig:
    """The training run's sampler settings, with every non-null key of sample.py's ``sampler``."""
    cfg = OmegaConf.to_container(train_cfg.sampler, resolve=True)
    cfg.update({k: v for k, v in OmegaConf.to_container(overrides, resolve=True).items() if v is not None})
    return OmegaConf.create(cfg)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r}: CUDA is not available on this machine (use device=cpu)")
    return device


def sample(cfg: DictConfig) -> dict:
    """mode=samples: draw ``sampler.n_samples`` samples; write samples.npz, samples.png and
    results.json. Other modes: see ``sample_modes``."""
    validate_sample(cfg)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    out_dir = Path(cfg.out_dir)
    device = resolve_device(cfg.device)
    train_cfg, net, datamodule = load_run(cfg.ckpt_path, device)
    if cfg.nnpack:
        nnpack_convs(net)  # CPU fp32 only (a no-op elsewhere); same weights, Winograd 3x3 convs
    sampler_cfg = merged_sampler_cfg(train_cfg, cfg.sampler)
    sampler = build_sampler(sampler_cfg)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["sampler"] = OmegaConf.to_container(sampler_cfg)  # the settings actually used
    resolved["train_config"] = OmegaConf.to_container(train_cfg)
    atomic_write_text(out_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(resolved)))

    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.mode != "samples":
        if cfg.mode not in MODES:
            raise ConfigError(f"mode={cfg.mode!r} is invalid: must be one of {('samples', *MODES)}")
        results = {"status": "finished", "mode": cfg.mode, "ckpt_path": str(cfg.ckpt_path)}
        results.update(
            MODES[cfg.mode](
                *((cfg, train_cfg) if cfg.mode == "fid" else (cfg,)), net, datamodule, sampler, out_dir, device
            )
        )
        atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, sort_keys=True))
        return results

    g = torch.Generator(device=device).manual_seed(cfg.seed)
    start = time.perf_counter()
    res = sampler(net, net.sigmas, tuple(datamodule.data_shape), g, device)
    elapsed = time.perf_counter() - start
    samples = res.samples.float().cpu()
    if samples.dim() > 2:
        samples = samples.clamp(0, 1)
    arrays = {"samples": samples.numpy()}
    if sampler.denoise:
        arrays["samples_before_denoise"] = res.before_denoise.float().cpu().clamp(0, 1).numpy()
    np.savez(out_dir / "samples.npz", **arrays)
    if samples.dim() == 2:
        datamodule.setup("fit")
    save_samples_figure(samples, out_dir / "samples.png", datamodule)
    results = {
        "status": "finished",
        "n_samples": len(samples),
        "time_s": elapsed,
        "images_per_s": len(samples) / max(elapsed, 1e-9),
        "ckpt_path": str(cfg.ckpt_path),
    }
    mixture = getattr(datamodule, "mixture", None)
    if mixture is not None:
        w = mixture.mode_weights(samples)
        results["toy/mode_weights"] = [round(float(v), 4) for v in w]
        results["toy/weight_error"] = float((w - mixture.weights).abs().max())
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, sort_keys=True))
    return results
