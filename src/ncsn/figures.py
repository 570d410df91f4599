"""Figures: image grids, sampling progressions (PNG + GIF), inpainting grids, NCSN Fig. 3.

Images are float tensors (N, C, H, W) in [0, 1] (clamped before saving). Matplotlib uses the
Agg backend: nothing here needs a display. Plain torch + matplotlib, no Lightning or Hydra.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

from .sampling import annealed_langevin, langevin  # noqa: E402


def _parent(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _to_pil(grid: torch.Tensor) -> Image.Image:
    arr = grid.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def save_grid(images: torch.Tensor, path, nrow: int = 8, padding: int = 2) -> Path:
    """Save images (N, C, H, W) in [0, 1] as one PNG grid with ``nrow`` images per row."""
    path = _parent(path)
    save_image(images.detach().float().cpu().clamp(0, 1), path, nrow=nrow, padding=padding)
    return path


def _level_columns(n_levels: int, n_cols: int | None) -> list[int]:
    if n_cols is None or n_cols >= n_levels:
        return list(range(n_levels))
    if n_cols <= 1:
        return [n_levels - 1]
    return sorted({round(k * (n_levels - 1) / (n_cols - 1)) for k in range(n_cols)})


def save_progression(
    frames: list,
    png_path,
    gif_path,
    n_show: int = 8,
    n_cols: int | None = None,
    duration_ms: int = 200,
) -> tuple[Path, Path]:
    """Show one annealed Langevin run level by level (``annealed_langevin(keep_frames=True).frames``,
    one (N, C, H, W) tensor per noise level, largest sigma first).

    PNG: rows = the first ``n_show`` samples, columns = levels (``n_cols`` evenly spaced levels,
    first and last included, when given). GIF: one frame per level, each a grid of the
    ``n_show`` samples; it loops forever. (PIL merges consecutive identical frames.)
    """
    if not frames:
        raise ValueError("no frames: sample with keep_frames=True")
    stack = torch.stack([f[:n_show].detach().float().cpu() for f in frames], dim=1)  # (n, L, C, H, W)
    cols = _level_columns(stack.shape[1], n_cols)
    n = stack.shape[0]
    save_grid(stack[:, cols].flatten(0, 1), png_path, nrow=len(cols))
    side = math.ceil(math.sqrt(n))
    pics = [_to_pil(make_grid(stack[:, i].clamp(0, 1), nrow=side, padding=2)) for i in range(stack.shape[1])]
    gif_path = _parent(gif_path)
    pics[0].save(gif_path, save_all=True, append_images=pics[1:], duration=duration_ms, loop=0)
    return Path(png_path), gif_path


def save_inpainting_grid(masked_input: torch.Tensor, samples: torch.Tensor, original: torch.Tensor, path) -> Path:
    """One row per image: occluded input | k inpainted samples | original.

    masked_input, original: (N, C, H, W); samples: (N, C, H, W) or (N, k, C, H, W).
    """
    if samples.dim() == masked_input.dim():
        samples = samples[:, None]
    rows = torch.cat([masked_input[:, None], samples, original[:, None]], dim=1)  # (N, k + 2, C, H, W)
    return save_grid(rows.flatten(0, 1), path, nrow=rows.shape[1])


# ----------------------------------------------------------------------------- toy (NCSN Fig. 3)


def _fmt(w: torch.Tensor) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in w) + ")"


def _scatter(ax, pts: torch.Tensor, title: str, lim: float, color: str = "tab:blue") -> None:
    p = pts.detach().double().cpu()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.5, color=color)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)


def scatter_samples(
    samples: torch.Tensor, data: torch.Tensor, path, title: str | None = None, lim: float = 8.0
) -> Path:
    """Scatter plot of 2-D ``samples`` (red) over ``data`` (grey)."""
    fig, ax = plt.subplots(figsize=(4, 4))
    d, s = data.detach().double().cpu(), samples.detach().double().cpu()
    ax.scatter(d[:, 0], d[:, 1], s=2, alpha=0.3, color="0.6", label="data")
    ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.6, color="tab:red", label="samples")
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=7, markerscale=4)
    if title:
        ax.set_title(title, fontsize=9)
    path = _parent(path)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def _quiver(ax, mixture, sigmas, learned, lim: float) -> float:
    """Exact (grey) vs learned (red) score at the smallest sigma on a grid; returns the
    density-weighted relative error E_p[|s_theta - s|^2] / E_p[|s|^2] over the grid."""
    g = torch.linspace(-lim, lim, 21)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    lvl = len(sigmas) - 1
    exact = mixture.score(pts, float(sigmas[-1])).double()
    est = learned(pts, torch.full((len(pts),), lvl, dtype=torch.long)).detach().double().cpu()
    p = mixture.log_prob(pts, float(sigmas[-1])).exp()
    err = float((p * ((est - exact) ** 2).sum(1)).sum() / (p * (exact**2).sum(1)).sum().clamp_min(1e-12))
    scale = max(float(exact.norm(dim=1).max()), 1e-12) / (2 * lim / 20)
    ax.quiver(pts[:, 0], pts[:, 1], exact[:, 0], exact[:, 1], color="0.5", angles="xy", scale_units="xy", scale=scale)
    ax.quiver(pts[:, 0], pts[:, 1], est[:, 0], est[:, 1], color="tab:red", angles="xy", scale_units="xy", scale=scale)
    return err


def toy_figure(
    mixture,
    sigmas: torch.Tensor,
    learned_score,
    path,
    n: int = 1280,
    step_lr: float = 0.1,
    n_steps_each: int = 100,
    seed: int = 0,
    init_low: float = -8.0,
    init_high: float = 8.0,
    learned_samples=None,
    learned_label: str = "annealed",
) -> dict:
    """NCSN Fig. 3: (a) data samples, (b) Langevin dynamics (NCSN Eq. (4)) with exact scores at
    the smallest sigma, step size alpha_L = ``step_lr`` and L * ``n_steps_each`` steps, (c)
    annealed Langevin dynamics (Algorithm 1) with exact scores, and with ``learned_score``
    (a ``score(x, level_index)`` function, given float32 CPU points) (d) the learned score field
    against the exact one at the smallest sigma, title with the annealed Langevin weights
    obtained with the learned score. Samplers start uniform on [init_low, init_high]^2.

    ``learned_samples()``, if given, draws the learned-score samples of panel (d) (e.g. the
    configured sampler, any kind, named ``learned_label``); else annealed Langevin as in (c).
    Each title states the mode weights recovered by ``mixture.mode_weights``. Returns
    {"data", "langevin", "annealed"[, "learned"]: list of weights, ["score_rel_error": float]}.
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    data = mixture.sample(n, generator=gen).float()
    exact = mixture.score_fn(sigmas)

    def init():
        return init_low + (init_high - init_low) * torch.rand(n, mixture.dim, generator=gen)

    n_total = len(sigmas) * n_steps_each
    plain = langevin(exact, init(), len(sigmas) - 1, step_lr, n_total, generator=gen, progress=False).samples
    annealed = annealed_langevin(exact, init(), sigmas, step_lr, n_steps_each, generator=gen, progress=False).samples
    weights = {
        "data": mixture.mode_weights(data),
        "langevin": mixture.mode_weights(plain),
        "annealed": mixture.mode_weights(annealed),
    }
    panels = 4 if learned_score is not None else 3
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.4))
    lim = max(abs(init_low), abs(init_high))
    _scatter(axes[0], data, f"(a) data, weights {_fmt(weights['data'])}", lim)
    _scatter(axes[1], plain, f"(b) Langevin, weights {_fmt(weights['langevin'])}", lim)
    _scatter(axes[2], annealed, f"(c) annealed Langevin, weights {_fmt(weights['annealed'])}", lim)
    out = {}
    if learned_score is not None:
        if learned_samples is None:
            drawn = annealed_langevin(
                learned_score, init(), sigmas, step_lr, n_steps_each, generator=gen, progress=False
            ).samples
        else:
            drawn = learned_samples()
        weights["learned"] = mixture.mode_weights(drawn.float().cpu())
        out["score_rel_error"] = _quiver(axes[3], mixture, sigmas, learned_score, lim)
        axes[3].set_xlim(-lim, lim)
        axes[3].set_ylim(-lim, lim)
        axes[3].set_aspect("equal")
        axes[3].set_title(
            f"(d) learned (red) vs exact score\n{learned_label} w. learned: {_fmt(weights['learned'])}, "
            f"rel. err {out['score_rel_error']:.3f}",
            fontsize=8,
        )
    fig.tight_layout()
    path = _parent(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {**{k: [float(v) for v in w] for k, w in weights.items()}, **out}


def save_samples_figure(samples: torch.Tensor, path: Path, datamodule=None) -> None:
    """A PNG grid of images in [0, 1], or a scatter plot of 2-D samples over the data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = samples.detach().float().cpu()
    if samples.dim() == 2:
        data = datamodule.val_set.tensors[0] if datamodule is not None and datamodule.val_set is not None else None
        scatter_samples(samples, data, path)
    else:
        images = samples.clamp(0, 1)
        if images.shape[-1] < 32:  # small images (8x8 digits) are enlarged so a person can read them
            factor = -(-32 // images.shape[-1])
            images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
        save_grid(images, path, nrow=int(max(1, round(len(samples) ** 0.5))))


# ----------------------------------------------------------------------------- loss per noise level


def save_loss_by_sigma(
    curves: list,
    path,
    title: str | None = None,
    highlight_last: bool = False,
    ylabel: str = "validation DSM loss (lambda(sigma)-weighted)",
) -> Path:
    """The validation DSM loss of each noise level against sigma (log x axis; log y when every
    loss is positive and they span a factor 10 or more).

    ``curves``: ``(label, sigmas, losses)`` or ``(label, sigmas, losses, errors)`` tuples of
    equal-length sequences (``errors``: half-widths drawn as error bars, e.g. the std over
    seeds). ``highlight_last``: the curves are one run's validations in time order: older ones
    thin and coloured by age, the last one thick and black (its label says so).
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    n = len(curves)
    values = [float(v) for c in curves for v in c[2]]
    log_y = bool(values) and min(values) > 0 and max(values) / min(values) >= 10
    for k, curve in enumerate(curves):
        label, sig, loss = curve[0], [float(v) for v in curve[1]], [float(v) for v in curve[2]]
        err = [float(v) for v in curve[3]] if len(curve) > 3 and curve[3] is not None else None
        order = sorted(range(len(sig)), key=lambda i: sig[i])
        sig, loss = [sig[i] for i in order], [loss[i] for i in order]
        err = [err[i] for i in order] if err is not None else None
        style = {"marker": "o", "markersize": 3, "label": label}
        if highlight_last:
            last = k == n - 1
            color = "black" if last else plt.cm.viridis(k / max(n - 1, 1))
            style.update(
                color=color, linewidth=2.2 if last else 0.9, alpha=1.0 if last else 0.6, zorder=3 if last else 2
            )
            if last:
                style["label"] = f"{label} (latest)"
            elif n > 16 and k > 0:  # many validations: label the first and the latest only
                style["label"] = None
        if err is not None:
            ax.errorbar(sig, loss, yerr=err, capsize=2, **style)
        else:
            ax.plot(sig, loss, **style)
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis) if log_y else (ax.xaxis,):  # 0.01, 30: not 10^-2, 3 x 10^1
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(matplotlib.ticker.LogFormatter(labelOnlyBase=False))
    ax.set_xlabel("sigma (noise level)")
    ax.set_ylabel(ylabel, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if 0 < n and (n <= 16 or highlight_last):
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = _parent(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
