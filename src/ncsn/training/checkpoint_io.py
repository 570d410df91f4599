"""Checkpoint files written atomically: a kill during a write never leaves a corrupt checkpoint.

The checkpoint is written to a temporary file in the same directory, flushed to disk, then
renamed over the target (``os.replace`` is atomic on POSIX), so ``last.ckpt`` is always either
the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = True) -> dict:
        # Weights-only unless a caller explicitly asks otherwise: never unpickle arbitrary objects.
        return torch.load(
            path, map_location=map_location or "cpu", weights_only=True if weights_only is None else weights_only
        )
