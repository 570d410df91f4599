"""Loggers: Weights & Biases that never hangs (offline unless credentials and the server are
there), and a CSV logger that keeps its metrics.csv across resumes."""

from __future__ import annotations

import csv
import os
import socket
from urllib.parse import urlparse

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

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


def make_wandb_logger(
    save_dir: str, project: str, entity: str | None, mode: str, group: str | None, name: str | None, tags: list
) -> WandbLogger:
    resolved = resolve_mode(mode)
    os.makedirs(save_dir, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group,
        name=name,
        tags=list(tags),
        offline=resolved == "offline",
        mode=resolved,
    )


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when its directory is not empty;
    a resumed run must keep it and append (new columns rewrite the header, rows are kept)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class ResumableCSVLogger(CSVLogger):
    """CSVLogger writing ``metrics.csv`` into ``save_dir`` itself, appending across resumes."""

    def __init__(self, save_dir: str):
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
