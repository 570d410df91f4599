"""One clean console for train.py and sample.py: each log line once, without Lightning's tips
and library deprecation noise (warnings about this project's own settings still show)."""

from __future__ import annotations

import logging
import warnings

#: Python warnings that say nothing about the user's run (matched at the start of the message)
NOISE_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch's _pytree, raised inside Lightning
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # tiny/debug runs
    r"The '\w+_dataloader' does not have many workers",  # data are in memory: workers would not help
)
#: log messages of Lightning that advertise rather than inform
NOISE_LOG_MESSAGES = ("💡 Tip:",)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.prefixes)


_FILTER = _DropMessages(NOISE_LOG_MESSAGES)


def quiet_console() -> None:
    """Call once Lightning is imported (inside the Hydra job).

    * Lightning's ``lightning`` logger has its own console handler and also propagates to the
      root logger, where Hydra's console handler prints every line a second time. With Hydra's
      logging configured (the root has handlers), Lightning's own handlers are removed: each line
      is printed once, in Hydra's format, and also lands in the job's ``<job>.log``.
    * Lightning's litlogger tip and the warnings in ``NOISE_WARNINGS`` are filtered.
    """
    root_has_handlers = bool(logging.getLogger().handlers)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if root_has_handlers:
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
