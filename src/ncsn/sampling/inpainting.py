"""Inpainting with annealed Langevin dynamics (NCSN Algorithm 2) and masks.

Mask convention: ``mask == 1`` marks KNOWN pixels (copied from the reference), ``mask == 0``
the pixels to inpaint. Masks broadcast against the images: a mask of shape (H, W), (1, H, W)
or (1, 1, H, W) applies to every channel and every sample; a mask of shape (N, C, H, W) can
differ per sample. Plain torch: no Lightning, no Hydra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .langevin import LangevinResult, LoopHooks, NoiseFn, ScoreFn, annealed_langevin
from .seeds import GeneratorNoise

MASK_KINDS = ("right_half", "left_half", "center_box", "random")
RENOISE = ("level", "step")


class InpaintHooks(LoopHooks):
    """NCSN Algorithm 2 as hooks of the Langevin loop: the known pixels (``mask == 1``) are held
    at y~ = reference + sigma_i z, drawn once per level (``renoise='level'``, NCSN Algorithm 2)
    or before every step (``'step'``, ermongroup/ncsnv2 code), and set before and after each
    update; the outputs hold exactly ``reference`` there."""

    def __init__(self, reference: torch.Tensor, mask: torch.Tensor, renoise: str, noise: NoiseFn, like: torch.Tensor):
        if renoise not in RENOISE:
            raise ValueError(f"renoise={renoise!r} is not one of {RENOISE}")
        self.known = torch.broadcast_to(mask.to(like.device) > 0.5, like.shape)
        self.ref = torch.broadcast_to(reference.to(device=like.device, dtype=like.dtype), like.shape)
        self.renoise, self.noise, self.y = renoise, noise, self.ref

    def _noisy_reference(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return self.ref + sigma * self.noise(x)

    def start_level(self, x, i, sigma):
        if self.renoise == "level":
            self.y = self._noisy_reference(x, sigma)
        return x

    def before_step(self, x, i, sigma):
        if self.renoise == "step":
            self.y = self._noisy_reference(x, sigma)
        return torch.where(self.known, self.y, x)

    def after_step(self, x, i, sigma):
        return torch.where(self.known, self.y, x)

    def output(self, x):
        return torch.where(self.known, self.ref, x)


def annealed_langevin_inpaint(
    score: ScoreFn,
    x_init: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor,
    sigmas: torch.Tensor,
    step_lr: float,
    n_steps_each: int,
    renoise: str = "level",
    denoise: bool = False,
    generator: torch.Generator | None = None,
    keep_frames: bool = False,
    progress: bool = True,
    noise: NoiseFn | None = None,
) -> LangevinResult:
    """Annealed Langevin inpainting, NCSN Algorithm 2 (and the NCSNv2 reference-code variant):
    ``sampling.annealed_langevin`` with ``InpaintHooks``.

    For each level i (largest sigma first), alpha_i = step_lr * (sigma_i / sigma_L)^2. The known
    pixels (``mask == 1``) are held at y~ = reference + sigma_i * z, and ``n_steps_each`` times

        x <- x + alpha_i * s(x, i) + sqrt(2 alpha_i) * z_t,   then   x[known] <- y~[known].

    With ``denoise`` a final noise-free step x <- x + sigma_L^2 s(x, L-1) (Tweedie) is applied
    with the known pixels still at their last noisy value. The returned samples (and
    ``before_denoise``) hold exactly ``reference`` at the known pixels. ``frames`` (with
    ``keep_frames``) are the iterates after each level, known pixels at that level's y~.
    ``reference`` and ``mask`` broadcast to ``x_init``, which is not modified. The noise (of the
    steps and of y~) comes from ``noise`` (a ``seeds`` source) or else from ``generator``.
    """
    noise = noise if noise is not None else GeneratorNoise(x_init.shape[0], generator)
    hooks = InpaintHooks(reference, mask, renoise, noise, x_init)
    return annealed_langevin(
        score, x_init, sigmas, step_lr, n_steps_each, denoise, None, keep_frames, progress, noise, hooks
    )


def make_mask(
    kind: str | Path,
    shape,
    size: float = 0.5,
    fraction: float = 0.5,
    invert: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A binary float mask (1 = known, 0 = to inpaint) for images of ``shape`` (..., H, W).

    The returned mask has shape (1,) * (len(shape) - 2) + (H, W), so it broadcasts over
    batch and channels. ``kind`` names the region to INPAINT:

    - ``right_half`` / ``left_half``: the right / left W // 2 columns are unknown
      (``right_half`` is NCSN's setting: the left half is given);
    - ``center_box``: a centred box of side ``size`` * (H, W) (rounded) is unknown;
    - ``random``: each pixel is unknown with probability ``fraction`` (same for all channels
      and samples), drawn with ``generator``;
    - otherwise ``kind`` is the path of an image file (PNG): WHITE (>= 128 in grey) = known,
      black = to inpaint, resized to (H, W) with nearest neighbour. ``invert`` swaps the two
      (white = to inpaint), for masks drawn as holes.
    """
    if len(shape) < 2:
        raise ValueError(f"mask shape {tuple(shape)} needs at least (H, W)")
    h, w = int(shape[-2]), int(shape[-1])
    m = torch.ones(h, w)
    if kind == "right_half":
        m[:, w - w // 2 :] = 0
    elif kind == "left_half":
        m[:, : w // 2] = 0
    elif kind == "center_box":
        if not 0.0 <= size <= 1.0:
            raise ValueError(f"center_box size={size} must be in [0, 1]")
        bh, bw = round(size * h), round(size * w)
        top, left = (h - bh) // 2, (w - bw) // 2
        m[top : top + bh, left : left + bw] = 0
    elif kind == "random":
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"random fraction={fraction} must be in [0, 1]")
        m = (torch.rand(h, w, generator=generator) >= fraction).float()
    elif Path(kind).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp") or Path(kind).is_file():
        m = load_mask(kind, (h, w))
    else:
        raise ValueError(f"mask kind {kind!r} is neither one of {MASK_KINDS} nor an image file")
    if invert:
        m = 1.0 - m
    return m.reshape((1,) * (len(shape) - 2) + (h, w))


def load_mask(path: str | Path, size) -> torch.Tensor:
    """Read a mask image: white (grey >= 128) = known = 1; resized to ``size`` = (H, W), nearest."""
    h, w = int(size[0]), int(size[1])
    with Image.open(path) as img:
        grey = img.convert("L").resize((w, h), Image.Resampling.NEAREST)
        return torch.from_numpy((np.asarray(grey) >= 128).astype(np.float32))


def save_mask(mask: torch.Tensor, path: str | Path) -> Path:
    """Write a mask (..., H, W) with 1 = known as a PNG: white = known, black = to inpaint."""
    m = mask.detach().cpu()
    while m.dim() > 2:  # the first sample / channel of a broadcast mask
        m = m[0]
    Image.fromarray(((m > 0.5).numpy() * 255).astype(np.uint8), mode="L").save(path)
    return Path(path)


def apply_mask(images: torch.Tensor, mask: torch.Tensor, fill: float = 0.5) -> torch.Tensor:
    """The occluded input shown in figures: known pixels from ``images``, the rest ``fill``."""
    return torch.where(mask.to(images.device) > 0.5, images, torch.full_like(images, fill))
