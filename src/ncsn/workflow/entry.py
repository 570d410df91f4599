"""The exit statuses of the entry points, in one place (train.py and sample.py call this)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from omegaconf import DictConfig

from ..training.score_model import NonFiniteLossError
from .config import ConfigError

EXIT_OK, EXIT_BAD_INPUT, EXIT_DIVERGED = 0, 2, 3


def run_entry(fn: Callable[[DictConfig], object], cfg: DictConfig) -> int:
    """Run a workflow; a bad config, path or checkpoint prints one line ``error: ...`` and gives
    2, a non-finite loss gives 3. Anything else is a bug and propagates with its traceback."""
    try:
        fn(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    return EXIT_OK
