"""Weights & Biases logger that never hangs: offline unless credentials and the server are there."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger

WANDB_MODES = ("auto", "online", "offline", "disabled")


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser(os.environ.get("NETRC", "~/.netrc"))
    try:
        with open(netrc) as f:
            return "api.wandb.ai" in f.read()
    except OSError:
        return False


def _server_reachable(timeout: float = 2.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(mode: str) -> str:
    """``auto`` -> ``online`` only with credentials and a reachable server (2 s), else ``offline``.
    An explicit WANDB_MODE in the environment wins over ``auto``."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode={mode!r} must be one of {WANDB_MODES}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if _has_credentials() and _server_reachable() else "offline"


def make_wandb_logger(save_dir: str, project: str, entity: str | None, mode: str, group: str | None,
                      name: str | None, tags: list) -> WandbLogger:
    resolved = resolve_mode(mode)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(save_dir=save_dir, project=project, entity=entity, group=group, name=name,
                       tags=list(tags), offline=resolved == "offline", mode=resolved)
