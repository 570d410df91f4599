"""Loggers: Weights & Biases that never hangs (offline unless credentials and the server are
there), and a CSV logger that keeps its metrics.csv across resumes."""

from __future__ import annotations

import csv
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser(os.environ.get("NETRC", "~/.netrc"))
    try:
        with open(netrc) as f:
            return (urlparse(_base_url()).hostname or "api.wandb.ai") in f.read()
    except OSError:
        return False


def _server_reachable(timeout: float = 2.0) -> bool:
    url = urlparse(_base_url())
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
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


def check_online(mode: str) -> None:
    """An online run (``logger.wandb.mode=online``, or ``WANDB_MODE=online`` with ``mode=auto``):
    credentials present, the server reachable (2 s) and accepting them (``wandb.login(verify=True)``),
    checked before the run starts, so a bad key is one ValueError instead of W&B's retries (up to
    minutes) and an exception in the middle of training."""
    what = f"logger.wandb.mode={mode}" if mode != "auto" else "WANDB_MODE=online"
    hint = "or use logger.wandb.mode=offline (upload later with `wandb sync`) or auto"
    if not _has_credentials():
        raise ValueError(f"{what}: no W&B credentials (set WANDB_API_KEY or run `wandb login`), {hint}")
    if not _server_reachable():
        raise ValueError(f"{what}: the W&B server {_base_url()} cannot be reached, {hint}")
    import wandb

    try:
        wandb.login(verify=True, prompt=False)
    except Exception as e:  # noqa: BLE001 - AuthenticationError, or a transport error: one line either way
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{what}: W&B did not accept the credentials ({reason}), {hint}") from None


#: The one step convention of a run directory: "step" = trainer.global_step, the number of
#: optimizer steps completed (checkpoint and sample file names, results.json, metrics.csv, W&B).
#: Lightning hands loggers its logging step, which is one less (the index of the batch being
#: finished), so the loggers below write ``step + LOGGING_STEP_OFFSET``.
LOGGING_STEP_OFFSET = 1


def global_step_of(logging_step: int | None) -> int | None:
    """Lightning's logging step -> trainer.global_step (see LOGGING_STEP_OFFSET)."""
    return None if logging_step is None else int(logging_step) + LOGGING_STEP_OFFSET


#: W&B summaries: the best (minimum) FID and the global step it was reached at, next to the last
FID_KEY, BEST_FID_KEY, BEST_FID_STEP_KEY = "fid", "fid/best", "fid/best_step"


class NcsnWandbLogger(WandbLogger):
    """Lightning's WandbLogger with the run's step convention and the summaries a sweep sorts by.

    * ``define_metric``: the summary of ``fid`` holds its minimum and its last value
      (``{"min": ..., "last": ...}``); ``fid/best`` (the running minimum, logged with every FID)
      and ``fid/best_step`` (the global step of that minimum) are plain numbers in the summary,
      for sorting runs, W&B sweeps (``metric.name: fid/best``) and parallel-coordinates plots;
      a resumed run continues them from its metrics.csv (``continue_best``).
    * Steps: ``log_metrics`` receives Lightning's logging step and records ``trainer/global_step``
      = that step + 1; ``log_image`` and ``log_table`` take a global step (``trainer.global_step``).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)  # deprecated in wandb: it only printed a warning
        self._best_fid: float | None = None
        self._best_step: int | None = None
        self._launch_pid = os.getpid()  # a rank forked by ddp_fork runs in another process

    def continue_best(self, fid: float, step: int) -> None:
        """A resumed run: the best FID so far (from the run directory's metrics.csv up to the
        resumed step), so ``fid/best`` and ``fid/best_step`` keep counting from it."""
        self._best_fid, self._best_step = float(fid), int(step)

    @property
    def experiment(self):
        first = self._experiment is None
        run = WandbLogger.experiment.fget(self)
        if first and getattr(run, "define_metric", None) is not None and rank_zero_only.rank == 0:
            run.define_metric(FID_KEY, summary="min,last")  # fid/best and fid/best_step: plain last values
        return run

    def finalize(self, status: str) -> None:
        """Lightning's finalize; in a rank that ``ddp_fork`` forked (rank 0 holds the run) also end
        the W&B run: the process exits without W&B's exit hook (its last records would be lost) and
        the launching process continues the same run for the end-of-run record (one run per job)."""
        super().finalize(status)
        if self._experiment is not None and os.getpid() != self._launch_pid and not getattr(self, "_attach_id", None):
            self._id = self._experiment.id
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None

    def log_metrics(self, metrics, step=None):
        self._log_at_global_step(dict(metrics), global_step_of(step))

    @rank_zero_only
    def _log_at_global_step(self, metrics: dict, step: int | None) -> None:
        fid = metrics.get(FID_KEY)
        if fid is not None:
            fid = float(fid)
            if self._best_fid is None or fid < self._best_fid:
                self._best_fid, self._best_step = fid, step
            metrics[BEST_FID_KEY] = self._best_fid
            metrics[BEST_FID_STEP_KEY] = self._best_step
        super().log_metrics(metrics, step)

    def log_image(self, key, images, step=None, **kwargs):
        """``step``: trainer.global_step."""
        super().log_image(key, images, None if step is None else step - LOGGING_STEP_OFFSET, **kwargs)

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        """``step``: trainer.global_step."""
        super().log_table(key, columns, data, dataframe, None if step is None else step - LOGGING_STEP_OFFSET)


def make_wandb_logger(
    save_dir: str,
    project: str,
    entity: str | None,
    mode: str,
    group: str | None,
    name: str | None,
    tags: list,
    log_model: bool | str = False,
    job_type: str | None = None,
    notes: str | None = None,
    id: str | None = None,
    resume: str | None = None,
) -> WandbLogger:
    """The W&B logger of ``conf/logger/wandb.yaml`` (every key is an argument here).

    ``log_model`` (false | true | all: upload checkpoints as W&B artifacts) needs an online run:
    with an explicit ``mode=offline`` or ``disabled`` it is refused (ValueError, exit 2); when
    ``mode=auto`` falls back to offline it is ignored with a warning, so the same command
    uploads on a machine that has credentials. ``id`` + ``resume`` (allow | must | never |
    auto) continue an existing W&B run. An online run checks its credentials first
    (``check_online``).
    """
    resolved = resolve_mode(mode)
    if log_model not in (False, True, "all"):
        raise ValueError(f"logger.wandb.log_model={log_model!r} is invalid: must be false, true or all")
    if resume not in (None, "allow", "must", "never", "auto"):
        raise ValueError(f"logger.wandb.resume={resume!r} is invalid: must be null, allow, must, never or auto")
    if resume in ("must",) and not id:
        raise ValueError("logger.wandb.resume=must needs logger.wandb.id (the run to continue)")
    if log_model and resolved != "online":
        if mode != "auto":
            raise ValueError(
                f"logger.wandb.log_model={log_model} needs an online run, not mode={mode} "
                "(checkpoints are uploaded as artifacts); set log_model=false"
            )
        log.warning(
            "logger.wandb.log_model=%s ignored: W&B runs offline here (no credentials or server); "
            "the checkpoints stay in the run directory",
            log_model,
        )
        log_model = False
    if resolved == "online" and rank_zero_only.rank == 0:  # type: ignore[attr-defined]
        check_online(mode)
    os.makedirs(save_dir, exist_ok=True)
    return NcsnWandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group,
        name=name,
        tags=list(tags),
        offline=resolved == "offline",
        mode=resolved,
        log_model=log_model,
        job_type=job_type,
        notes=notes,
        id=id,
        resume=resume,
    )


def log_run_end(loggers, run_dir, results: dict, global_step: int) -> None:
    """At the end of a run (rank 0): send the final samples (samples/final.png), the toy figure
    (samples/toy_figure.png) and results.json's numbers to every W&B logger. The numbers go to the
    run's summary under ``results/`` (a sweep can sort by any of them); images at ``global_step``."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        for key, name in (("samples/final", "final.png"), ("samples/toy_figure", "toy_figure.png")):
            path = Path(run_dir) / "samples" / name
            if path.is_file():
                logger.log_image(key=key, images=[str(path)], step=global_step)
        numbers = {
            f"results/{k}": v
            for k, v in results.items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool) or isinstance(v, list)
        }
        logger.experiment.summary.update(numbers)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when its directory is not empty;
    a resumed run must keep it and append (new columns rewrite the header, rows are kept)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class ResumableCSVLogger(CSVLogger):
    """CSVLogger writing ``metrics.csv`` into ``save_dir`` itself, appending across resumes.
    Every row is written when it is logged (a kill loses at most the row being written); rows
    past the checkpoint a run resumes from are moved out first (``trim_metrics``)."""

    def __init__(self, save_dir: str):
        super().__init__(save_dir=save_dir, name="", version="", flush_logs_every_n_steps=1)

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment  # type: ignore[return-value]  # Lightning's own CSVLogger does the same

    def log_metrics(self, metrics, step=None):
        """Rows carry ``step`` = trainer.global_step (see LOGGING_STEP_OFFSET)."""
        super().log_metrics(metrics, global_step_of(step))


TRAIN_COLUMNS = ("train/loss", "train/skipped_batches")


def trim_metrics(path, resume_step: int, val_pending: bool = False) -> int:
    """Before a run resumes from a checkpoint at global step ``resume_step``: keep the rows of
    ``path`` (metrics.csv) that the checkpoint covers, so the resumed run logs each later step
    once, in order. Kept: training rows of steps <= resume_step, and the other rows (validation,
    FID, samples) of steps < resume_step, or = resume_step unless that validation is
    still to run (``val_pending``: the checkpoint was written after the epoch's last batch, before
    its validation). The other rows, and any malformed row (a kill mid-write), are appended to
    ``metrics.dropped.csv`` beside it (under a line naming the resume step). Returns the number
    of rows moved."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return 0
    header, body = rows[0], rows[1:]
    step_col = header.index("step") if "step" in header else None
    train_cols = [header.index(c) for c in TRAIN_COLUMNS if c in header]
    keep: list[list[str]] = []
    drop: list[list[str]] = []
    for row in body:
        try:
            if len(row) != len(header) or step_col is None:
                raise ValueError
            step = int(float(row[step_col]))
        except ValueError:
            drop.append(row)
            continue
        is_train = any(row[i] != "" for i in train_cols)
        # rows carry step = trainer.global_step (LOGGING_STEP_OFFSET): training rows up to resume_step
        last_kept = resume_step if is_train else resume_step - (1 if val_pending else 0)
        (keep if step <= last_kept else drop).append(row)
    if not drop:
        return 0
    with open(path.with_name("metrics.dropped.csv"), "a", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"# dropped when resuming at step {resume_step}; columns:", *header])
        w.writerows(drop)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *keep])
    os.replace(tmp, path)
    return len(drop)
