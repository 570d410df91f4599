"""What the entry points share, in one place: train.py's and sample.py's job body and script end
(``run_job``, ``run_script``), their exit statuses (``run_entry``), the SIGTERM guard of a
training run and Hydra's run-directory check. Light to import (no torch): the scripts import it
before Hydra parses the command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..core.checks import unwritable
from ..training.guards import NonFiniteLossError

EXIT_OK, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130
_job_started = False  # set when a job starts: a SystemExit(1) before it is Hydra refusing the command


def run_job(script: str, cfg: DictConfig, workflow: Callable[[DictConfig], dict | None], out_key: str) -> float | None:
    """The body of an entry point's Hydra main: run ``workflow`` on ``cfg`` (its bad inputs and
    failures become exit statuses: ``run_entry``), then print the summary and record it in the
    directory at config key ``out_key`` (``run_summary.finish_job``, which exits with a non-zero
    status). Returns the sweep objective to Hydra."""
    global _job_started
    _job_started = True
    from .console import quiet_console
    from .run_summary import finish_job

    quiet_console()  # each log line once, no library tips and deprecation noise
    results: dict = {}
    code = run_entry(lambda c: results.update(workflow(c) or {}), cfg)
    return finish_job(script, cfg, code, results, OmegaConf.select(cfg, out_key))


def run_script(main: Callable[[], object], block_sigterm_at_exit: bool = False) -> None:
    """An entry point's ``__main__``: call its Hydra ``main``. Hydra refusing the command line or
    the config before the job started (an unknown group option, a malformed override, a run
    directory it cannot create; its message is above) exits 2, as every bad input does.
    ``block_sigterm_at_exit`` (train.py): once all is written, SIGTERM is blocked, since the
    interpreter's shutdown restores its default action and a SIGTERM in those last moments would
    turn a finished run into "killed by SIGTERM"."""
    if (message := unquoted_path(sys.argv[1:])) is not None:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    try:
        main()
    except SystemExit as e:
        if e.code == 1 and not _job_started:
            sys.exit(EXIT_BAD_INPUT)
        raise
    finally:
        if block_sigterm_at_exit:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def unquoted_path(args: list[str]) -> str | None:
    """The message for the first command-line override Hydra cannot parse because its value is a
    path holding ``=`` (a sweep job's directory is named by its settings, ``seed=1,...``), with
    the quoting that makes it one value; None when there is none (Hydra reports anything else)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in args:
        key, sep, value = arg.partition("=")
        if arg.startswith("-") or not sep or "=" not in value or "/" not in value or value[:1] in "'\"":
            continue
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            return (
                f"`{arg}`: the value is a path holding '=' (a sweep job's directory), which Hydra reads as "
                f"another override; quote it: \"{key}='{value}'\" (several, with -m: \"{key}='a','b'\")"
            )
    return None


class RunInterrupted(RuntimeError):
    """The run was interrupted (Ctrl-C): results.json says ``interrupted``; exit 130."""


class Preempted(BaseException):
    """SIGTERM outside Lightning's fit loop (start-up, final samples): the run stops there and
    records ``preempted`` (exit 0). A BaseException, like KeyboardInterrupt, so no ``except
    Exception`` on the way swallows it."""


class SigtermGuard:
    """SIGTERM at any moment of a training run ends it as ``preempted`` (exit 0).

    Installed for the whole run (restoring the previous handler at the end). Where it ``raises``
    (start-up, final samples) the first SIGTERM raises ``Preempted`` with the phase's name.
    During ``trainer.fit`` and while results.json is written it is only recorded (``received``):
    in fit's loops Lightning's own handler (which calls this one too) stops after the batch and
    ``PreemptionCheckpoint`` saves ``last.ckpt``; one recorded while fit was starting is handed
    to Lightning by ``PreemptionCheckpoint`` at the training start. ``before``: SIGTERMs recorded before the
    run started (train.py records them from its first line). ``raising=False`` from the start: a
    DDP child rank, which must still join the process group (rank 0 waits for it there) and stop
    with the others at the first batch, rather than exit alone."""

    def __init__(self, before=(), raising: bool = True):
        self.received = bool(before)
        self.where, self.raising = "start-up", raising
        self._previous: Any = None  # the handler replaced: a callable, SIG_DFL or SIG_IGN

    def __enter__(self) -> SigtermGuard:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        if self.received and self.raising:
            self.__exit__()
            raise Preempted(self.where)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def phase(self, where: str, raising: bool) -> None:
        self.where, self.raising = where, raising

    def was_received(self) -> bool:
        """``received``, as a callable (``PreemptionCheckpoint(sigterm_received=...)``)."""
        return self.received

    def __getstate__(self) -> dict:
        # ddp_spawn pickles the callbacks: a spawned rank gets the flag, not this process's saved handler
        return {**self.__dict__, "_previous": None}

    def _handle(self, signum, frame) -> None:
        first, self.received = not self.received, True
        if first and self.raising:
            self.raising = False
            raise Preempted(self.where)


class RunDirCheck(Callback):
    """Hydra callback (conf/hydra/default.yaml): a run or sweep directory that does not exist and
    cannot be made there (a read-only or full parent) stops the command with one ``error:`` line,
    exit 2, before Hydra tries (its own failure is a traceback). One that exists is the job's to
    check (train.py: its run lock; sample.py: out_dir)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        _refuse_unmakeable(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        _refuse_unmakeable(config, "hydra.sweep.dir")


def _refuse_unmakeable(config: DictConfig, key: str) -> None:
    path = Path(str(OmegaConf.select(config, key)))
    problem = None if path.is_dir() else unwritable(path, key)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def run_entry(fn: Callable[[DictConfig], object], cfg: DictConfig) -> int:
    """Run a workflow; a bad config, path or checkpoint prints one line ``error: ...`` and gives
    2, a non-finite loss gives 3, Ctrl-C 130. Anything else is a bug and propagates with its traceback."""
    from .config import ConfigError  # here, not above: it imports torch

    try:
        fn(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        record_bad_input(f"error: {e}")
        return EXIT_BAD_INPUT
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except RunInterrupted as e:
        print(f"{e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def record_bad_input(message: str) -> None:
    """Bad input writes nothing: the run directory Hydra made for this job (holding only its
    ``<job>.log``) is removed again, with its empty parent directories below the working
    directory (``outputs/train/<date>``). A run
    directory that holds more (a run being resumed, another process's run) keeps it all, and the
    error line is appended to its ``<job>.log``."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized() or str(HydraConfig.get().mode) != "RunMode.RUN":
        return
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    log_file = out / f"{hc.job.name}.log"
    handlers = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename) == log_file.resolve()
    ]
    try:
        entries = set(os.listdir(out))
    except OSError:
        return
    if not os.access(out, os.W_OK):  # an unwritable run directory is left exactly as it was
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
        return
    if entries <= {log_file.name}:
        for h in handlers:
            logging.getLogger().removeHandler(h)
            h.close()
        try:
            log_file.unlink(missing_ok=True)
            out.rmdir()
            stop, d = Path.cwd().resolve(), out.resolve().parent
            while stop in d.parents and not any(d.iterdir()):  # e.g. outputs/train/<date> below cwd
                d.rmdir()
                d = d.parent
        except OSError:
            pass
        return
    record = logging.LogRecord("ncsn", logging.ERROR, __file__, 0, message, None, None)
    for h in handlers:
        h.handle(record)
