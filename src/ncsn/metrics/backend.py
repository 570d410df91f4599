"""The one interface every FID feature extractor implements.

A backend is a plain object (not an ``nn.Module``), so it never becomes part of a model's
``state_dict``, its EMA copy or a checkpoint. It owns its network and moves it with ``to``.
"""

from __future__ import annotations

import torch


class FIDBackend:
    """Feature extractor for FID.

    Attributes:
        name: identifies the extractor and its weights; part of the real-statistics cache key.
        feature_dim: D, the length of one feature vector.
    """

    name: str
    feature_dim: int

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] (values outside are clamped) -> features (N, D) float64.

        The result is on the backend's device.
        """
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        raise NotImplementedError

    def to(self, device: torch.device | str) -> FIDBackend:
        raise NotImplementedError


def check_images(images: torch.Tensor, channels: tuple[int, ...], where: str) -> None:
    """Raise a ValueError naming ``where`` unless ``images`` is a float (N, C, H, W) batch."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{where}: expected a float tensor (N, C, H, W) of images in [0, 1], got {shape}")
    if images.shape[1] not in channels:
        raise ValueError(
            f"{where}: images have {images.shape[1]} channels, this backend takes {' or '.join(map(str, channels))}"
        )
    if not images.is_floating_point():
        raise ValueError(
            f"{where}: images have dtype {images.dtype}; pass floats in [0, 1] (divide uint8 images by 255)"
        )
