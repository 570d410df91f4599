"""Sweeps that can be re-run and extended: job directories keyed by their settings.

* **Job directories.** A job of a ``-m`` sweep runs in ``<hydra.sweep.dir>/<job key>``
  (``hydra.sweep.subdir`` in conf/hydra/default.yaml): the job key is the job's command-line
  overrides, sorted, as ``key=value,key=value`` (``job_key``), without the keys listed in
  ``hydra.job.config.override_dirname.exclude_keys`` (shell patterns: ``paths.*``, ``logger.*``,
  ...; keys that say where things go or how fast they run, not what is trained). Values are
  written in one canonical form (``lr=1e-4`` and ``lr=0.0001`` are one job); a key that is long
  or holds characters a file name should not (``/``, spaces, ...) becomes a readable prefix and
  a hash. So the same settings always map to the same directory, whatever the job's position in
  the sweep: ``seed=0,1,2`` on an existing ``seed=0,1`` sweep adds only the seed-2 job.
* **Re-running a sweep.** A job whose directory holds a ``finished`` results.json and the same
  config (``finished_job``) is skipped: one line, nothing written (no W&B run, no samples, no
  training); an unfinished one resumes from its last checkpoint (and its own W&B run:
  ``wandb_run.previous_run_id``).
* **A refused command writes nothing.** Hydra's basic sweeper writes ``multirun.yaml`` before
  any job has run, so a command whose jobs are refused would still replace it. The sweeper of
  ``hydra_plugins.ncsn_sweeper`` writes it to ``.multirun.yaml.pending`` instead; the first job
  that passes every check renames it over ``multirun.yaml`` (``record_sweep``), and a refusal
  removes it (``drop_pending_record``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import re
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

RESOLVER = "ncsn_job_key"  # ${ncsn_job_key:${hydra.overrides.task},${...exclude_keys}}
PENDING = ".multirun.yaml.pending"
MAX_NAME = 120  # longer job keys are shortened to a prefix and a hash
_SAFE = re.compile(r"[A-Za-z0-9._=,+\-]+")  # no path separators, spaces, quotes or glob characters
#: keys that change how long a job trains: a finished job re-run with another value resumes
TRAINING_LENGTH = ("trainer.max_steps", "trainer.max_epochs")


def _canonical(value) -> str:
    """One spelling of an override value: 1e-4 and 0.0001 alike, true/false/null as in YAML."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_canonical(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def excluded(key: str, patterns) -> bool:
    """``key`` (or a group under it) matches one of the shell patterns (``paths.*``, ``logger``)."""
    return any(fnmatch.fnmatchcase(key, str(p)) or fnmatch.fnmatchcase(key.split(".")[0], str(p)) for p in patterns)


def job_key(overrides, exclude=()) -> str:
    """The directory name of a sweep job: its overrides without the excluded keys, sorted, in
    canonical form; safe as one file name and at most ``MAX_NAME`` characters (else a prefix and
    12 hex digits of its SHA-256). ``no_overrides`` for a job without any."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    items = []
    for override in OverridesParser.create().parse_overrides([str(o) for o in overrides or ()]):
        key = override.key_or_group + (f"@{override.package}" if override.package else "")
        if excluded(key, exclude or ()):
            continue
        if override.is_delete():
            items.append(f"~{key}" + ("" if override.value() is None else f"={_canonical(override.value())}"))
        else:
            items.append(f"{key}={_canonical(override.value())}")
    name = ",".join(sorted(items)) or "no_overrides"
    if len(name) <= MAX_NAME and _SAFE.fullmatch(name) and name not in (".", ".."):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    prefix = re.sub(r"[^A-Za-z0-9._=,+\-]+", "_", name)[: MAX_NAME - 13].rstrip("._,")
    return f"{prefix}-{digest}"


def _resolve_job_key(overrides, exclude) -> str:
    def plain(x):
        return OmegaConf.to_container(x, resolve=True) if isinstance(x, (ListConfig, DictConfig)) else x or []

    return job_key(plain(overrides), plain(exclude))


def register_resolver() -> None:
    """``${ncsn_job_key:...}`` for conf/hydra/default.yaml (registered when Hydra loads its
    plugins; the resolver travels to remote launchers with Hydra's state)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _resolve_job_key)


def shared_job_dir(jobs: list[list[str]], exclude) -> str | None:
    """Why two jobs of one sweep would run in the same directory (they differ only in excluded
    keys, e.g. ``-m trainer.max_steps=1000,2000``), or None when every job has its own."""
    seen: dict[str, int] = {}
    for i, overrides in enumerate(jobs):
        key = job_key(overrides, exclude)
        if key in seen:
            a, b = jobs[seen[key]], overrides
            differ = sorted({o.split("=")[0].lstrip("+~") for o in set(a) ^ set(b)})
            return (
                f"jobs #{seen[key]} and #{i} of this sweep would share one job directory ({key}): they differ "
                f"only in {', '.join(differ)}, left out of job directory names "
                "(hydra.job.config.override_dirname.exclude_keys); sweep them in separate hydra.sweep.dir"
            )
        seen[key] = i
    return None


# ---- multirun.yaml: written once the command is accepted ---------------------------------------


def write_pending_record(sweep_dir: Path, config: DictConfig) -> Path:
    """The sweeper's ``multirun.yaml``, kept aside until a job accepts the command."""
    from .config import atomic_write_text

    sweep_dir.mkdir(parents=True, exist_ok=True)
    pending = sweep_dir / PENDING
    atomic_write_text(pending, OmegaConf.to_yaml(config))
    return pending


def promote_pending_record(sweep_dir: Path) -> bool:
    """``.multirun.yaml.pending`` -> ``multirun.yaml`` (atomic; False when there is none: another
    job of the sweep was first, or this sweep was not started by ``hydra_plugins.ncsn_sweeper``)."""
    try:
        os.replace(sweep_dir / PENDING, sweep_dir / "multirun.yaml")
    except FileNotFoundError:
        return False
    return True


def drop_pending_record(sweep_dir: Path) -> None:
    (sweep_dir / PENDING).unlink(missing_ok=True)


# ---- a job of a re-run sweep -------------------------------------------------------------------


def _sweep_job():
    """Hydra's config of the current job when it is a job of a ``-m`` sweep run by the process
    that writes its directory, else None."""
    from hydra.core.hydra_config import HydraConfig

    from .ranks import is_run_dir_writer

    if not HydraConfig.initialized() or not is_run_dir_writer():
        return None
    hc = HydraConfig.get()
    return hc if str(hc.mode) == "RunMode.MULTIRUN" else None


def saved_config(run_dir: Path) -> dict | None:
    """The config a run directory holds (``.hydra/config.yaml``), None when absent or unreadable."""
    try:
        saved = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=False)
        return saved if isinstance(saved, dict) else None
    except Exception:  # noqa: BLE001 - absent or unreadable: not a finished job of this config
        return None


def skip_differences(old: dict, new: dict, exclude=()) -> list[str]:
    """The keys that keep a finished job from being skipped: those the resume check
    ``config.config_differences`` compares, plus the training length, less the keys that do not
    change what is trained (``exclude``)."""
    from ..core.checks import flatten
    from .config import config_differences

    a, b = flatten(old), flatten(new)
    diff = config_differences(old, new) + [k for k in TRAINING_LENGTH if a.get(k) != b.get(k)]
    return sorted({k for k in diff if not excluded(k, exclude)})


def read_status(run_dir: Path) -> dict:
    import json

    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


def finished_job(run_dir: Path, resolved: dict) -> dict | None:
    """Called by train.py's workflow once a job has passed every check, before it trains.

    For a job of a ``-m`` sweep: the command is accepted, so the sweep's ``multirun.yaml`` is
    written now (``promote_pending_record``; not when the run directory holds another config,
    which ``config.record_run_config`` refuses next). Then, when the run directory holds a
    ``finished`` results.json and the same config (``skip_differences``), the job is skipped:
    results.json's contents are returned with ``status: skipped`` (the caller returns them; the
    file is not touched; the summary is the one line ``── train.py finished, skipped: <run dir>``).
    Otherwise (a new or unfinished job; a single run) None: train."""
    from .config import config_differences

    hc = _sweep_job()
    if hc is None:
        return None
    old = saved_config(Path(run_dir))
    if old is None or resolved.get("allow_config_change") or not config_differences(old, resolved):
        promote_pending_record(Path(str(hc.sweep.dir)))
    results = read_status(Path(run_dir))
    if old is None or results.get("status") != "finished":
        return None
    exclude = list(OmegaConf.select(hc, "job.config.override_dirname.exclude_keys") or [])
    return None if skip_differences(old, resolved, exclude) else {**results, "status": "skipped"}


# ---- the end of a sweep ------------------------------------------------------------------------


def sweep_summary(returns, sweep_dir: Path, started: float) -> tuple[list[str], int]:
    """(lines, exit code) at the end of a ``-m`` sweep: each job's directory and outcome
    (finished, skipped: finished by an earlier run of the sweep, failed with its reason, or the
    status its results.json records), the compare command, and the exit status: 0, or the first
    failed job's (2 bad config, 3 diverged, 1 otherwise)."""
    from hydra.core.utils import JobStatus

    rows, code = [], 0
    counts: dict[str, int] = {}
    for ret in (r for batch in returns for r in batch):
        run_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg is not None else None
        if ret.status != JobStatus.COMPLETED:
            outcome = "failed"
            detail = str(ret._return_value)
            code = code or getattr(ret._return_value, "code", 1)
        else:
            results_json = run_dir / "results.json" if run_dir is not None else None
            fresh = results_json is not None and results_json.is_file() and results_json.stat().st_mtime >= started
            outcome = read_status(run_dir).get("status", "finished") if fresh and run_dir else "skipped"
            detail = "finished by an earlier run of this sweep" if outcome == "skipped" else ""
        counts[outcome] = counts.get(outcome, 0) + 1
        name = run_dir.name if run_dir is not None else "?"
        rows.append(f"  {name:<40}  {outcome}" + (f": {detail}" if detail else ""))
    total = sum(counts.values())
    tally = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    title = f"── sweep: {total} job{'s' if total != 1 else ''} ({tally}) "
    lines = [title + "─" * max(0, 60 - len(title)), *rows, f"compare: python -m ncsn.compare {sweep_dir}"]
    return lines, code
