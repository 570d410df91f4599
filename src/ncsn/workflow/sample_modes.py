"""sample.py's modes, one table with one signature: ``MODES[name].run(ctx) -> dict``.

Each mode writes its documented files into ``ctx.out_dir`` and returns the numbers for
results.json. Every mode uses the configured sampler (``Sampler``: its kind, initial state,
per-sample seeds, autocast/compile); a mode that cannot use a kind names the kinds it takes
(``Mode.hooks``) and ``check_mode`` refuses the others before any work. Only mode=fid runs on
several processes (torchrun: each rank draws its share of the per-sample seeds, the FID
statistics are summed across ranks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from ..core.figures import (
    save_inpainting_grid,
    save_interpolation_grid,
    save_loss_by_sigma,
    save_progression,
    save_samples_figure,
)
from ..data.base import train_split
from ..metrics.fid import configured_scores
from ..metrics.likelihood import check_continuous, heldout_bpd
from ..metrics.score_error import csv_text, fair_sigma, score_error_by_sigma
from ..nets.base import ScoreNet
from ..sampling import Sampler
from ..sampling.inpainting import InpaintHooks, apply_mask, make_mask
from ..sampling.interpolation import interpolate
from .build import sampler_data_mean
from .config import ConfigError, atomic_write_text
from .evaluation import build_fid_for
from .toy_results import mode_weight_results, toy_figure_results


@dataclass
class ModeContext:
    """Everything a mode gets: sample.py's config, the checkpoint's training config and network,
    the data module, the sampler, where to write, the device and this process's rank."""

    cfg: DictConfig
    train_cfg: DictConfig
    net: ScoreNet
    datamodule: Any  # a LightningDataModule of ncsn.data (data_shape, setup, val_set, ...)
    sampler: Sampler
    out_dir: Path
    device: str
    rank: int = 0
    world_size: int = 1
    _mean: torch.Tensor | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple:
        return tuple(self.datamodule.data_shape)

    def data_mean(self) -> torch.Tensor | None:
        """The training data's mean, the centre of a Gaussian initial state (None if unused)."""
        if self._mean is None and (mean := sampler_data_mean(self.sampler, self.datamodule)) is not None:
            self._mean = mean.to(self.device)  # not None exactly when the sampler wants it
        return self._mean

    def draw(self, n: int | None = None, indices=None, **kw):
        """``Sampler.draw`` of the network with sample.py's seed, device and data mean."""
        return self.sampler.draw(
            self.net,
            self.net.sigmas,
            self.shape,
            self.cfg.seed,
            self.device,
            n=n,
            indices=indices,
            data_mean=self.data_mean(),
            **kw,
        )


class Mode(NamedTuple):
    run: Callable[[ModeContext], dict]
    hooks: bool = False  # needs a kind that takes loop hooks (``Kind.hooks``)
    why: str = ""  # why the others are refused
    distributed: bool = False  # may run on several processes


def _need_images(ctx: ModeContext, mode: str) -> None:
    if len(ctx.shape) != 3:
        raise ConfigError(
            f"mode={mode!r} needs image data; this checkpoint's data has shape "
            f"{ctx.shape} (use mode=samples or mode=toy_figure)"
        )


def run_samples(ctx: ModeContext) -> dict:
    """``sampler.n_samples`` samples: samples.npz (and samples_before_denoise), samples.png."""
    start = time.perf_counter()
    res = ctx.draw()
    elapsed = time.perf_counter() - start
    samples = res.samples.float().cpu()
    if samples.dim() > 2:
        samples = samples.clamp(0, 1)
    arrays = {"samples": samples.numpy()}
    if ctx.sampler.denoise:
        arrays["samples_before_denoise"] = res.before_denoise.float().cpu().clamp(0, 1).numpy()
    np.savez(ctx.out_dir / "samples.npz", **arrays)
    if samples.dim() == 2:
        ctx.datamodule.setup("fit")
    save_samples_figure(samples, ctx.out_dir / "samples.png", ctx.datamodule)
    results = {
        "n_samples": len(samples),
        "nfe": res.nfe,
        "time_s": elapsed,
        "images_per_s": len(samples) / max(elapsed, 1e-9),
    }
    mixture = getattr(ctx.datamodule, "mixture", None)
    if mixture is not None:
        results.update(mode_weight_results(mixture, samples))
    return results


def run_fid(ctx: ModeContext) -> dict:
    """FID-N (``eval.n_samples``) against the training split, with and without the final
    denoising step (``eval.denoise_both``); samples.png: the first batch (at most ``sampler.n_samples``);
    optionally every sample in fid_samples.npz.
    Rank r of w draws the samples r, r + w, ... (per-sample seeds: the same images as one process)."""
    _need_images(ctx, "fid")
    cfg, sampler = ctx.cfg, ctx.sampler
    base = build_fid_for(ctx.train_cfg.get("fid"), ctx.datamodule, ctx.device)
    if base is None:
        raise ConfigError(
            "mode=fid: the checkpoint's training config has fid.backend=none; "
            "set fid=classifier or fid=inception in sample.py"
        )
    ev = cfg.eval
    if ev.save_npz and ctx.world_size > 1:
        raise ConfigError(f"eval.save_npz=true is invalid with {ctx.world_size} processes: must be false")
    variants = ("denoised", "no_denoise") if ev.denoise_both else ("denoised" if sampler.denoise else "no_denoise",)
    fids = {v: base if i == 0 else base.fresh() for i, v in enumerate(variants)}  # one extractor, one real set
    kept: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    grid: list[torch.Tensor] = []
    mine = torch.arange(ctx.rank, ev.n_samples, ctx.world_size)
    start, nfe = time.perf_counter(), 0
    bar = tqdm(total=len(mine), desc="FID samples", unit="img", dynamic_ncols=True, disable=ctx.rank != 0)
    for chunk in mine.split(sampler.batch_size):  # generated as in training: sampler.batch_size at a time
        res = ctx.draw(indices=chunk, progress=False, denoise="denoised" in variants)
        nfe = res.nfe
        if not grid:  # the first batch, as samples.png (the picked variant)
            grid.append((res.samples if sampler.denoise else res.before_denoise).float().cpu().clamp(0, 1))
        for v in variants:
            images = (res.samples if v == "denoised" else res.before_denoise).clamp(0, 1)
            fids[v].update(images)
            if ev.save_npz:
                kept[v].append((images * 255 + 0.5).floor().byte().permute(0, 2, 3, 1).cpu().numpy())
        bar.update(len(chunk))
    bar.close()
    elapsed = time.perf_counter() - start
    out = {
        "n_samples": ev.n_samples,
        "nfe": nfe,
        "time_s": elapsed,
        "images_per_s": ev.n_samples / elapsed,
        "fid_backend": base.name,
        "world_size": ctx.world_size,
    }
    for v in variants:
        out.update(fids[v].scores(f"fid/{v}"))  # FID and KID, summed across ranks under torch.distributed
    out.update(configured_scores(out, sampler.denoise))
    if grid and ctx.rank == 0:
        save_samples_figure(grid[0][: sampler.n_samples], ctx.out_dir / "samples.png", ctx.datamodule)
    if ev.save_npz:  # uint8 N x H x W x C, the layout TTUR / pytorch-fid read
        arrays: dict[str, Any] = {
            ("samples" if v == variants[0] else f"samples_{v}"): np.concatenate(kept[v]) for v in variants
        }
        np.savez(ctx.out_dir / "fid_samples.npz", **arrays)
    return out


def check_nll_images(n_images: int | None, held, split: str) -> None:
    """``nll.n_images`` fits the held-out split (null: all of it)."""
    if n_images is not None and n_images > len(held):
        raise ConfigError(f"nll.n_images={n_images} is invalid: the {split!r} split has {len(held)} images")


def run_nll(ctx: ModeContext) -> dict:
    """Bits/dim of the first ``nll.n_images`` images of the data module's validation split by the
    probability-flow ODE (``ncsn.metrics.likelihood``: Heun at ``nll.num_steps`` sigmas, uniform
    dequantization, Hutchinson or exact trace); sigma-continuous networks only. fp32, no sampler."""
    _need_images(ctx, "nll")
    try:
        check_continuous(ctx.net)
    except ValueError as e:
        raise ConfigError(f"mode=nll: {e}") from None
    nc, dm = ctx.cfg.nll, ctx.datamodule
    held = dm.load_split(dm.val_split)
    check_nll_images(nc.n_images, held, dm.val_split)
    n_images = len(held) if nc.n_images is None else nc.n_images
    start = time.perf_counter()
    args = (n_images, nc.batch_size, ctx.cfg.seed, dm.levels, nc.num_steps, nc.rho, nc.estimator, ctx.device)
    r = heldout_bpd(ctx.net, held, *args)
    info = {"n_images": n_images, "split": dm.val_split, "num_steps": nc.num_steps, "estimator": nc.estimator}
    return {
        "bpd": r["bpd"],
        "bpd_se": r["bpd_se"],
        "nfe": r["nfe"],
        "time_s": time.perf_counter() - start,
        "nll/prior_fit": r["prior_fit"],
        **{f"nll/{k}": v for k, v in info.items()},
    }


def run_inpaint(ctx: ModeContext) -> dict:
    """NCSN Algorithm 2: ``inpaint.n_images`` validation images, ``inpaint.n_per_image`` samples
    each; the sampler's Langevin loop with ``InpaintHooks``, per-sample seeds."""
    _need_images(ctx, "inpaint")
    cfg, device = ctx.cfg, ctx.device
    ic = cfg.inpaint
    ctx.datamodule.setup("fit")
    val = ctx.datamodule.val_set
    reference = torch.stack([val[i][0] for i in range(min(ic.n_images, len(val)))])
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
    ref, mask_d = reference.repeat_interleave(ic.n_per_image, 0).to(device), mask.to(device)
    res = ctx.draw(n=len(ref), hooks=lambda idx, noise, x0: InpaintHooks(ref[idx], mask_d, ic.renoise, noise, x0))
    samples = res.samples.clamp(0, 1).cpu().reshape(len(reference), ic.n_per_image, *reference.shape[1:])
    save_inpainting_grid(apply_mask(reference, mask), samples, reference, ctx.out_dir / "inpainting.png")
    np.savez(
        ctx.out_dir / "inpainting.npz", samples=samples.numpy(), reference=reference.numpy(), mask=mask.float().numpy()
    )
    return {"n_images": len(reference), "n_per_image": ic.n_per_image, "nfe": res.nfe}


def run_interpolate(ctx: ModeContext) -> dict:
    """NCSNv2 interpolation: one row per sample index, the noise of seeds (seed, seed_b) slerped,
    ``interpolate.n_interp`` columns; the ends are sample k of mode=samples with either seed."""
    _need_images(ctx, "interpolate")
    ic = ctx.cfg.interpolate
    rows = interpolate(
        ctx.sampler,
        ctx.net,
        ctx.net.sigmas,
        (ic.n_rows, *ctx.shape),
        ctx.cfg.seed,
        ic.seed_b,
        ic.n_interp,
        ctx.device,
        data_mean=ctx.data_mean(),
    )
    rows = rows.clamp(0, 1).cpu()
    save_interpolation_grid(rows, ctx.out_dir / "interpolation.png", ctx.cfg.seed, ic.seed_b)
    np.savez(ctx.out_dir / "interpolation.npz", samples=rows.numpy())
    return {"n_rows": ic.n_rows, "n_interp": ic.n_interp}


def run_progression(ctx: ModeContext) -> dict:
    """One sampling run shown step by step (a level of annealed Langevin, a grid sigma of the
    other kinds): progression.png (rows = samples) and progression.gif."""
    _need_images(ctx, "progression")
    res = ctx.draw(n=ctx.cfg.progression.n_show, keep_frames=True)
    frames = [f.clamp(0, 1) for f in res.frames] + ([res.samples.clamp(0, 1).cpu()] if ctx.sampler.denoise else [])
    grid = ctx.sampler.grid(ctx.net.sigmas, bool(getattr(ctx.net, "continuous", False)))
    labels = ctx.sampler.kind.frame_labels(grid)
    labels += ["denoised"] if ctx.sampler.denoise else []
    save_progression(
        frames,
        labels,
        ctx.out_dir / "progression.png",
        ctx.out_dir / "progression.gif",
        n_show=ctx.cfg.progression.n_show,
        n_cols=ctx.cfg.progression.n_cols,
    )
    return {"n_frames": len(frames), "nfe": res.nfe}


def run_toy_figure(ctx: ModeContext) -> dict:
    """NCSN Fig. 3 for a checkpoint trained on the toy mixture; panel (d) samples the learned
    score with the configured sampler (any kind)."""
    mixture = getattr(ctx.datamodule, "mixture", None)
    if mixture is None:
        raise ConfigError("mode=toy_figure needs a checkpoint trained on the toy mixture (experiment=toy_gmm)")
    net, sampler = ctx.net.cpu(), ctx.sampler
    learned = sampler.draw(net, net.sigmas, (mixture.dim,), ctx.cfg.seed, "cpu", progress=False).samples
    return toy_figure_results(mixture, sampler, net, ctx.cfg.seed, learned, ctx.out_dir / "toy_figure.png")


_SCORE_ERROR_CURVES = (
    ("network DSM loss", "loss"),
    ("DSM loss of the smoothed training set's score", "floor"),
    ("score error 1/2 sigma^p |s - s_ref|^2", "score_error"),
)


def run_score_error(ctx: ModeContext) -> dict:
    """The network's score against the exact score of the Gaussian-smoothed training split, per
    sigma on the (first ``score_error.n_images``) validation images (``metrics.score_error``):
    score_error.csv, score_error.png (DSM loss, its floor and the score error against sigma)."""
    sc, net, device = ctx.cfg.score_error, ctx.net, ctx.device
    levels = net.sigmas.detach().cpu().double()
    if sc.num_sigmas is not None and not getattr(net, "continuous", False):
        raise ConfigError(
            f"score_error.num_sigmas={sc.num_sigmas} is invalid for this network: it is conditioned on its "
            f"{len(levels)} training levels, must be null (evaluate at the levels)"
        )
    lo, hi = float(levels[0].log10()), float(levels[-1].log10())
    grid = levels if sc.num_sigmas is None else torch.logspace(lo, hi, sc.num_sigmas, dtype=torch.float64)
    ctx.datamodule.setup("fit")
    train = next(iter(torch.utils.data.DataLoader(train_split(ctx.datamodule), batch_size=10**9)))[0].to(device)
    val = ctx.datamodule.val_set
    held = torch.stack([val[i][0] for i in range(min(sc.n_images or len(val), len(val)))]).to(device)
    score, full = ctx.sampler.wrap(net), torch.full((len(held),), 0, device=device)

    def score_at(x, k):  # the network as the sampler calls it: at level k, or at a grid sigma
        cond = full[: len(x)] + k if sc.num_sigmas is None else full[: len(x)].to(x.dtype) + float(grid[k])
        return score(x, cond)

    start, power = time.perf_counter(), float(OmegaConf.select(ctx.train_cfg, "loss.anneal_power", default=2.0))
    gen = torch.Generator(device=device).manual_seed(ctx.cfg.seed)
    rows = score_error_by_sigma(score_at, train, held, grid, power, sc.n_noise, gen, ctx.sampler.batch_size)
    fair = fair_sigma(held, train)
    atomic_write_text(ctx.out_dir / "score_error.csv", csv_text(rows, fair, levels=sc.num_sigmas is None))
    curves = [(name, [r["sigma"] for r in rows], [r[key] for r in rows]) for name, key in _SCORE_ERROR_CURVES]
    title = f"{len(held)} held-out images x {sc.n_noise} noise draws; the reference is fair for sigma >= {fair:.3g}"
    save_loss_by_sigma(curves, ctx.out_dir / "score_error.png", title, ylabel=f"sigma^{power:g}-weighted, per image")
    fair_rows = [r["rel_score_error"] for r in rows if r["sigma"] >= fair]
    return {
        "score_error/fair_sigma": fair,
        "score_error/fair_sigma_per_dim": fair / float(np.sqrt(held[0].numel())),
        "score_error/rel_error_fair": float(np.mean(fair_rows)) if fair_rows else None,
        "score_error/n_train": len(train),
        "score_error/n_images": len(held),
        "score_error/n_sigmas": len(rows),
        "time_s": time.perf_counter() - start,
    }


MODES: dict[str, Mode] = {
    "samples": Mode(run_samples),
    "fid": Mode(run_fid, distributed=True),
    "nll": Mode(run_nll),
    "inpaint": Mode(run_inpaint, True, "inpainting is NCSN Algorithm 2, hooks of the annealed Langevin loop"),
    "interpolate": Mode(run_interpolate),
    "progression": Mode(run_progression),
    "toy_figure": Mode(run_toy_figure),
    "score_error": Mode(run_score_error),
}


def check_mode(mode: str, sampler: Sampler, world_size: int = 1) -> Mode:
    """The mode, or ConfigError when it cannot use the sampler's kind or this many processes."""
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r} is invalid: must be one of {tuple(MODES)}")
    m = MODES[mode]
    if m.hooks and not sampler.kind.hooks:
        raise ConfigError(f"sampler={sampler.name} is invalid for mode={mode}: must be sampler=annealed ({m.why})")
    if world_size > 1 and not m.distributed:
        raise ConfigError(
            f"mode={mode} runs on one process (got {world_size}): only "
            f"{tuple(k for k, v in MODES.items() if v.distributed)} run on several"
        )
    return m
