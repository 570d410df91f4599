"""sample.py's modes beyond plain samples: FID evaluation, inpainting, interpolation,
progressions and the toy figure. Each writes its documented files into ``out_dir`` and returns
the numbers for results.json."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ..figures import save_grid, save_inpainting_grid, save_progression, toy_figure
from ..inpainting import annealed_langevin_inpaint, apply_mask, make_mask
from ..interpolation import interpolate
from ..metrics import FID
from ..sampling import Sampler
from .config import ConfigError
from .evaluation import build_fid_for


def _need_images(datamodule, mode: str) -> None:
    if len(datamodule.data_shape) != 3:
        raise ConfigError(
            f"mode={mode!r} needs image data; this checkpoint's data has shape "
            f"{tuple(datamodule.data_shape)} (use mode=samples or mode=toy_figure)"
        )


def run_fid(
    cfg: DictConfig, train_cfg: DictConfig, net, datamodule, sampler: Sampler, out_dir: Path, device: str
) -> dict:
    """FID-N (``eval.n_samples``) against the training split, with and without the final
    denoising step (``eval.denoise_both``); optionally every sample in fid_samples.npz."""
    _need_images(datamodule, "fid")
    base = build_fid_for(train_cfg.get("fid"), datamodule, device)
    if base is None:
        raise ConfigError(
            "mode=fid: the checkpoint's training config has fid.backend=none; "
            "set fid=classifier or fid=inception in sample.py"
        )
    ev = cfg.eval
    variants = ("denoised", "no_denoise") if ev.denoise_both else ("denoised" if sampler.denoise else "no_denoise",)
    fids = {v: FID(base.backend, base.real_mu, base.real_sigma) for v in variants}  # one real-stats set
    kept = {v: [] for v in variants}
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    start, done = time.perf_counter(), 0
    bar = tqdm(total=ev.n_samples, desc="FID samples", unit="img", dynamic_ncols=True)
    while done < ev.n_samples:
        m = min(ev.batch_size, ev.n_samples - done)
        res = sampler(
            net,
            net.sigmas,
            tuple(datamodule.data_shape),
            g,
            device,
            n=m,
            progress=False,
            denoise="denoised" in variants,
        )
        for v in variants:
            images = (res.samples if v == "denoised" else res.before_denoise).clamp(0, 1)
            fids[v].update(images)
            if ev.save_npz:
                kept[v].append((images * 255 + 0.5).floor().byte().permute(0, 2, 3, 1).cpu().numpy())
        done += m
        bar.update(m)
    bar.close()
    elapsed = time.perf_counter() - start
    out = {
        "n_samples": ev.n_samples,
        "time_s": elapsed,
        "images_per_s": ev.n_samples / elapsed,
        "fid_backend": base.name,
    }
    for v in variants:
        out[f"fid/{v}"] = fids[v].compute()
    out["fid"] = out["fid/denoised"] if sampler.denoise else out["fid/no_denoise"]
    if ev.save_npz:  # uint8 N x H x W x C, the layout TTUR / pytorch-fid read
        arrays = {("samples" if v == variants[0] else f"samples_{v}"): np.concatenate(kept[v]) for v in variants}
        np.savez(out_dir / "fid_samples.npz", **arrays)
    return out


def run_inpaint(cfg: DictConfig, net, datamodule, sampler: Sampler, out_dir: Path, device: str) -> dict:
    """NCSN Algorithm 2: ``inpaint.n_images`` validation images, ``inpaint.n_per_image`` samples each."""
    _need_images(datamodule, "inpaint")
    ic = cfg.inpaint
    datamodule.setup("fit")
    reference = torch.stack([datamodule.val_set[i][0] for i in range(min(ic.n_images, len(datamodule.val_set)))])
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    try:
        mask = make_mask(
            ic.mask,
            tuple(reference.shape),
            size=ic.box_size,
            fraction=ic.fraction,
            invert=ic.invert,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
    except (ValueError, OSError) as e:
        raise ConfigError(f"inpaint.mask={ic.mask!r}: {e}") from None
    ref = reference.repeat_interleave(ic.n_per_image, 0).to(device)
    x0 = sampler.init_low + (sampler.init_high - sampler.init_low) * torch.rand(ref.shape, generator=g, device=device)
    res = annealed_langevin_inpaint(
        sampler.wrap(net),
        x0,
        ref,
        mask.to(device),
        net.sigmas,
        sampler.step_lr,
        sampler.n_steps_each,
        renoise=ic.renoise,
        denoise=sampler.denoise,
        generator=g,
    )
    samples = res.samples.clamp(0, 1).cpu().reshape(len(reference), ic.n_per_image, *reference.shape[1:])
    save_inpainting_grid(apply_mask(reference, mask), samples, reference, out_dir / "inpainting.png")
    np.savez(
        out_dir / "inpainting.npz", samples=samples.numpy(), reference=reference.numpy(), mask=mask.float().numpy()
    )
    return {"n_images": len(reference), "n_per_image": ic.n_per_image}


def run_interpolate(cfg: DictConfig, net, datamodule, sampler: Sampler, out_dir: Path, device: str) -> dict:
    """NCSNv2 interpolation: one row per seed pair (seed, seed+1), ..., ``interpolate.n_interp`` columns."""
    _need_images(datamodule, "interpolate")
    ic = cfg.interpolate
    rows = interpolate(
        sampler.wrap(net),
        net.sigmas,
        sampler.step_lr,
        sampler.n_steps_each,
        (ic.n_rows, *datamodule.data_shape),
        cfg.seed,
        ic.seed_b,
        ic.n_interp,
        sampler.init_low,
        sampler.init_high,
        sampler.denoise,
        device,
    )
    rows = rows.clamp(0, 1).cpu()
    save_grid(rows.flatten(0, 1), out_dir / "interpolation.png", nrow=ic.n_interp)
    np.savez(out_dir / "interpolation.npz", samples=rows.numpy())
    return {"n_rows": ic.n_rows, "n_interp": ic.n_interp}


def run_progression(cfg: DictConfig, net, datamodule, sampler: Sampler, out_dir: Path, device: str) -> dict:
    """One sampling run shown level by level: progression.png (rows = samples) and progression.gif."""
    _need_images(datamodule, "progression")
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    res = sampler(net, net.sigmas, tuple(datamodule.data_shape), g, device, n=cfg.progression.n_show, keep_frames=True)
    frames = [f.clamp(0, 1) for f in res.frames] + ([res.samples.clamp(0, 1).cpu()] if sampler.denoise else [])
    save_progression(
        frames,
        out_dir / "progression.png",
        out_dir / "progression.gif",
        n_show=cfg.progression.n_show,
        n_cols=cfg.progression.n_cols,
    )
    return {"n_frames": len(frames)}


def run_toy_figure(cfg: DictConfig, net, datamodule, sampler: Sampler, out_dir: Path, device: str) -> dict:
    """NCSN Fig. 3 for a checkpoint trained on the toy mixture."""
    mixture = getattr(datamodule, "mixture", None)
    if mixture is None:
        raise ConfigError("mode=toy_figure needs a checkpoint trained on the toy mixture (experiment=toy_gmm)")
    weights = toy_figure(
        mixture,
        net.sigmas.cpu(),
        sampler.wrap(net.cpu()),
        out_dir / "toy_figure.png",
        n=sampler.n_samples,
        step_lr=sampler.step_lr,
        n_steps_each=sampler.n_steps_each,
        seed=cfg.seed,
        init_low=sampler.init_low,
        init_high=sampler.init_high,
    )
    return {f"toy/figure_{k}": v for k, v in weights.items()}


MODES = {
    "fid": run_fid,
    "inpaint": run_inpaint,
    "interpolate": run_interpolate,
    "progression": run_progression,
    "toy_figure": run_toy_figure,
}
