"""Figures: image grids, sampling progressions (PNG + GIF), inpainting and interpolation grids,
NCSN Fig. 3, loss per noise level. This module only draws what it is given (no sampling here).

Images are float tensors (N, C, H, W) in [0, 1] (clamped before saving). Small images are
enlarged by nearest neighbour so a person can read them, and the labelled grids (inpainting,
interpolation, progression) name their rows and columns (PIL's default font). Matplotlib uses the
Agg backend: nothing here needs a display. Plain torch + matplotlib + PIL, no Lightning or Hydra.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from torchvision.utils import save_image  # noqa: E402


def _parent(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


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


# ----------------------------------------------------------------------------- labelled image grids

MIN_SHORT_SIDE = 300  # px: the grid of a labelled figure is at least this on its short side
MIN_TILE = 64  # px: each image at least this tall (room for a label over its column)
_PAD, _GAP, _FONT_PX = 4, 6, 14
_INK, _MARK, _SEP = (0, 0, 0), (230, 110, 0), (150, 170, 205)  # text, marked columns, between images


@functools.cache
def _font():
    return ImageFont.load_default(size=_FONT_PX)  # Pillow's scalable default font (no file needed)


def _upscale(h: int, w: int, rows: int, cols: int) -> int:
    """The nearest-neighbour factor that makes each image >= MIN_TILE px tall and the grid's
    short side >= MIN_SHORT_SIDE px (1 for images already that large)."""
    f = max(1, math.ceil(MIN_TILE / h))
    while min(rows * (h * f + _PAD), cols * (w * f + _PAD)) + _PAD < MIN_SHORT_SIDE:
        f += 1
    return f


def _wrap(draw, text: str, width: float) -> list[str]:
    """``text`` broken at spaces (and at newlines) into lines no wider than ``width`` when possible."""
    lines = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}".strip()
            if line and draw.textlength(trial, font=_font()) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def labelled_grid(
    tiles: torch.Tensor,
    col_labels=None,
    row_labels=None,
    title: str | None = None,
    marked_cols=(),
) -> Image.Image:
    """Images (R, C, ch, H, W) in [0, 1] as an RGB picture: R rows, C columns, upscaled by
    nearest neighbour (``_upscale``), a label over each column and left of each row (lists of R / C
    strings, or None), ``title`` on top, and a coloured frame around the columns ``marked_cols``."""
    rows, cols, _, h, w = tiles.shape
    f = _upscale(h, w, rows, cols)
    th, tw = h * f + _PAD, w * f + _PAD  # one image and the padding before it
    pix = tiles.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).expand(-1, -1, 3, -1, -1).numpy()
    pix = pix.transpose(0, 1, 3, 4, 2).repeat(f, axis=2).repeat(f, axis=3)  # (R, C, H f, W f, 3)
    arr = np.empty((rows * th + _PAD, cols * tw + _PAD, 3), dtype=np.uint8)
    arr[:] = _SEP  # neither black nor white: images with white or black borders stay apart
    for r in range(rows):
        for c in range(cols):
            arr[_PAD + r * th : (r + 1) * th, _PAD + c * tw : (c + 1) * tw] = pix[r, c]
    grid = Image.fromarray(arr)
    probe = ImageDraw.Draw(grid)
    line_h = _FONT_PX + 4
    heads = [_wrap(probe, str(t), tw - 2) for t in col_labels] if col_labels else []
    left = max((probe.textlength(str(t), font=_font()) for t in row_labels), default=0) if row_labels else 0
    left = int(left) + 2 * _GAP if row_labels else _GAP
    titles = _wrap(probe, title, left + grid.width - _GAP) if title else []
    n_head = max(map(len, heads), default=0)
    top = _GAP + line_h * n_head + (line_h * len(titles) + _GAP if titles else 0) + (_GAP if heads else 0)
    canvas = Image.new("RGB", (left + grid.width + _GAP, top + grid.height + _GAP), (255, 255, 255))
    canvas.paste(grid, (left, top))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(titles):
        draw.text((_GAP, _GAP + i * line_h), text, fill=_INK, font=_font())
    for c, lines in enumerate(heads):  # bottom-aligned: the last line of each label sits on its column
        x, y0 = left + _PAD + c * tw + (tw - _PAD) / 2, top - _GAP - line_h * len(lines)
        colour = _MARK if c in marked_cols else _INK
        for i, text in enumerate(lines):
            draw.text((x, y0 + i * line_h), text, fill=colour, font=_font(), anchor="ma")
    for r, text in enumerate(row_labels or ()):
        y = top + _PAD + r * th + (th - _PAD) / 2
        draw.text((left - _GAP, y), str(text), fill=_INK, font=_font(), anchor="rm")
    for c in marked_cols:
        x = left + c * tw
        draw.rectangle((x, top, x + tw + _PAD - 1, top + grid.height - 1), outline=_MARK, width=_PAD - 1)
    return canvas


def _save_png(img: Image.Image, path) -> Path:
    path = _parent(path)
    img.save(path)
    return path


def save_progression(
    frames: list,
    labels: list,
    png_path,
    gif_path,
    n_show: int = 8,
    n_cols: int | None = None,
    duration_ms: int = 200,
) -> tuple[Path, Path]:
    """One sampling run frame by frame: ``frames`` (one (N, C, H, W) tensor per frame, e.g. per
    noise level, largest sigma first), ``labels`` (one string per frame, e.g. its sigma).

    PNG: rows = the first ``n_show`` samples, columns = frames (``n_cols`` evenly spaced frames,
    first and last included, when given), each column headed by its label. GIF: one frame per
    frame, a grid of the ``n_show`` samples with its label on top; it loops forever.
    """
    if not frames:
        raise ValueError("no frames: sample with keep_frames=True")
    if len(labels) != len(frames):
        raise ValueError(f"{len(labels)} labels for {len(frames)} frames: must be one per frame")
    stack = torch.stack([f[:n_show].detach().float().cpu() for f in frames], dim=1)  # (n, L, C, H, W)
    cols = _level_columns(stack.shape[1], n_cols)
    n = stack.shape[0]
    rows = [f"sample {k}" for k in range(n)]
    title = "one sampling run, left to right: the noise level over each column"
    png = labelled_grid(stack[:, cols], [labels[i] for i in cols], rows, title)
    side = math.ceil(math.sqrt(n))
    blank = torch.ones(side * side - n, *stack.shape[2:])
    pics = []
    for i, label in enumerate(labels):
        tiles = torch.cat([stack[:, i], blank]).reshape(side, side, *stack.shape[2:])
        pics.append(labelled_grid(tiles, title=f"{label}  ({i + 1}/{len(labels)})".replace("\n", " ")))
    gif_path = _parent(gif_path)
    pics[0].save(gif_path, save_all=True, append_images=pics[1:], duration=duration_ms, loop=0)
    return _save_png(png, png_path), gif_path


def save_inpainting_grid(masked_input: torch.Tensor, samples: torch.Tensor, original: torch.Tensor, path) -> Path:
    """One row per image, labelled columns: masked input | k inpainted results | original.

    masked_input, original: (N, C, H, W); samples: (N, C, H, W) or (N, k, C, H, W).
    """
    if samples.dim() == masked_input.dim():
        samples = samples[:, None]
    rows = torch.cat([masked_input[:, None], samples, original[:, None]], dim=1)  # (N, k + 2, C, H, W)
    k = samples.shape[1]
    heads = ["masked input", *(["result"] if k == 1 else [f"result {j + 1}" for j in range(k)]), "original"]
    title = "grey: the pixels each result fills in (it keeps the known ones)"
    return _save_png(labelled_grid(rows, heads, [f"image {i}" for i in range(len(rows))], title), path)


def save_interpolation_grid(rows: torch.Tensor, path, seed_a: int, seed_b: int) -> Path:
    """Interpolation rows (n_rows, n_interp, C, H, W): columns headed by t (t = 0: the sample of
    ``seed_a``, t = 1: that of ``seed_b``, both ends framed), rows by the sample index."""
    n = rows.shape[1]
    heads = [f"t={k / (n - 1):.2f}" for k in range(n)]
    heads[0], heads[-1] = f"seed {seed_a}\nt=0", f"seed {seed_b}\nt=1"
    labels = [f"sample {k}" for k in range(rows.shape[0])]
    title = f"noise of seed {seed_a} slerped to that of seed {seed_b}"
    return _save_png(labelled_grid(rows, heads, labels, title, marked_cols=(0, n - 1)), path)


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
    samples: torch.Tensor, data: torch.Tensor | None, path, title: str | None = None, lim: float = 8.0
) -> Path:
    """Scatter plot of 2-D ``samples`` (red) over ``data`` (grey; none without it)."""
    fig, ax = plt.subplots(figsize=(4, 4))
    s = samples.detach().double().cpu()
    if data is not None:
        d = data.detach().double().cpu()
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


def toy_figure(panels, path, learned_label: str = "annealed") -> Path:
    """NCSN Fig. 3 from ``sampling.toy_panels.ToyPanels``: (a) data, (b) Langevin and (c) annealed
    Langevin with exact scores, each titled with its mode weights, and with a learned score (d) its
    field (red) against the exact one (grey) at the smallest sigma, titled with the weights of the
    ``learned_label`` samples and the relative score error."""
    learned = panels.learned_field is not None
    fig, axes = plt.subplots(1, 4 if learned else 3, figsize=(3.2 * (4 if learned else 3), 3.4))
    lim, w = panels.lim, panels.weights
    _scatter(axes[0], panels.data, f"(a) data, weights {_fmt(w['data'])}", lim)
    _scatter(axes[1], panels.langevin, f"(b) Langevin, weights {_fmt(w['langevin'])}", lim)
    _scatter(axes[2], panels.annealed, f"(c) annealed Langevin, weights {_fmt(w['annealed'])}", lim)
    if learned:
        pts, exact, est, ax = panels.grid, panels.exact_field, panels.learned_field, axes[3]
        scale = max(float(exact.norm(dim=1).max()), 1e-12) / (2 * lim / 20)
        for field, colour in ((exact, "0.5"), (est, "tab:red")):
            ax.quiver(
                pts[:, 0], pts[:, 1], field[:, 0], field[:, 1], color=colour, angles="xy", scale_units="xy", scale=scale
            )
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(
            f"(d) learned (red) vs exact score\n{learned_label} w. learned: {_fmt(w['learned'])}, "
            f"rel. err {panels.score_rel_error:.3f}",
            fontsize=8,
        )
    fig.tight_layout()
    path = _parent(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
