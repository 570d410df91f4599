"""One clean console for train.py and sample.py: each log line once, without Lightning's tips
and library deprecation noise (warnings about this project's own settings still show), and log
files (``<job>.log``) that read as plain text: no carriage returns or terminal colour codes,
the model summary and the end-of-run summary included."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable

from lightning.pytorch.callbacks import ModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

#: Python warnings that say nothing about the user's run (matched at the start of the message)
NOISE_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # torch's _pytree, raised inside Lightning
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # tiny/debug runs
    r"The '\w+_dataloader' does not have many workers",  # data are in memory: workers would not help
)
#: log messages of Lightning that advertise rather than inform
NOISE_LOG_MESSAGES = ("💡 Tip:", "Trainer already configured with model summary callbacks")


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
    * The job's log files get plain text (``plain_text``).
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

    plain = _PlainText()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and plain not in handler.filters:
            handler.addFilter(plain)


#: terminal control sequences (colours, cursor moves) and carriage returns
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|\r")


def plain_text(text: str) -> str:
    """``text`` without terminal control sequences and carriage returns (a progress bar's
    redraws keep their last state)."""
    lines = [line.rstrip("\r").rsplit("\r", 1)[-1] for line in str(text).split("\n")]
    return _CONTROL.sub("", "\n".join(lines))


class _PlainText(logging.Filter):
    """Log files get plain text (installed on the job's file handlers by ``quiet_console``)."""

    def __eq__(self, other) -> bool:
        return isinstance(other, _PlainText)

    def __hash__(self) -> int:
        return hash(_PlainText)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = plain_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def to_log_files(lines: Iterable[str]) -> None:
    """Write ``lines`` (already shown on the console, e.g. the end-of-run summary) to the job's
    log files as they are (no log-line prefix), without the console seeing them twice."""
    record = logging.LogRecord("ncsn", logging.INFO, __file__, 0, plain_text("\n".join(lines)), None, None)
    bare = logging.Formatter("%(message)s")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                formatter, handler.formatter = handler.formatter, bare
                handler.handle(record)  # opens a delayed file, like any log line
            finally:
                handler.formatter = formatter
                handler.release()


class RunProgressBar(RichProgressBar):
    """Lightning's progress bar without what means nothing here: the logger's version number
    (``v_num``), and the epoch total when training is bounded by steps (``Epoch 3/-2``)."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        max_epochs = self.trainer.max_epochs
        if max_epochs is None or max_epochs < 1:
            return f"Epoch {current_epoch}".ljust(len(self.validation_description))
        return super()._get_train_description(current_epoch)


class RunModelSummary(ModelSummary):
    """The model summary as plain text through the log (so it lands in ``<job>.log`` too),
    without the FLOPs column and total when they were not measured (0)."""

    @staticmethod
    def summarize(
        summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, **kwargs
    ) -> None:
        columns = [c for c in summary_data if not (total_flops == 0 and c[0] == "FLOPs")]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *columns
        )
        if total_flops == 0:
            table = "\n".join(line for line in table.split("\n") if not line.endswith("Total Flops"))
        logging.getLogger("lightning.pytorch.callbacks.model_summary").info("\n" + table)


def console_callbacks(enable_progress_bar: bool, enable_model_summary: bool) -> list:
    """The progress bar and model summary train.py gives the Trainer (in place of Lightning's
    defaults), for what ``trainer.enable_progress_bar`` / ``enable_model_summary`` switch on."""
    return [RunProgressBar()] * bool(enable_progress_bar) + [RunModelSummary()] * bool(enable_model_summary)
