"""The identity of a training job in W&B (group, name, tags), from Hydra's view of the job.

* A sweep (``-m``): the group is the sweep's name (``sweep=...``) with the sweep directory's date
  and time, e.g. ``num_scales_2026-12-01_23-40-05`` (two sweeps started at the same time of day on
  different days stay apart); the name is made of the keys that vary in the sweep only (the
  comma lists and ranges of the command line and the sweeper's ``params``), e.g.
  ``num_scales=10,seed=1``.
* A single run: the group is the experiment's name (``digits``), the name
  ``<experiment>_<date>_<time>`` (when it started).
* Tags: the experiment's name, the sweep's name under ``-m``, and ``logger.wandb.tags``.
* A resumed run (an unfinished job of a re-run sweep, a preempted run) continues the W&B run it
  started: its id is read back from the run's W&B directory (``previous_run_id``).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

#: the command line as the sweep was started (train.py's DDP support rewrites sys.argv per job)
_ARGV = list(sys.argv[1:])


def sweep_varying_keys(hc: DictConfig, argv: list[str] | None = None) -> set[str]:
    """The keys a sweep varies: the sweeper's ``params`` (a named sweep's grid, an Optuna search
    space) and the sweep overrides (``a=1,2``, ``range(...)``, ``choice(...)``) of the command line."""
    keys = {str(k) for k in (OmegaConf.select(hc, "sweeper.params") or {})}
    args = [a for a in (_ARGV if argv is None else argv) if not a.startswith("-")]
    try:
        for override in OverridesParser.create().parse_overrides(args):
            if override.is_sweep_override():
                keys.add(override.key_or_group)
    except Exception:  # noqa: BLE001 - not Hydra's command line (e.g. a launcher's own argv)
        pass
    return {k.lstrip("+~") for k in keys}


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key -> its last part, unless two keys share that last part (then the full key)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def job_identity(argv: list[str] | None = None) -> dict:
    """{"group", "name", "tags"} of the current Hydra job ({} outside Hydra)."""
    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    choices = hc.runtime.choices
    experiment = str(choices.get("experiment") or hc.job.name)
    sweep = choices.get("sweep")
    tags = [experiment]
    if str(hc.mode) == "RunMode.MULTIRUN":
        stamp = "_".join(Path(hc.sweep.dir).parts[-2:])  # .../<date>/<time> by default
        group = f"{sweep or experiment}_{stamp}"
        varying = sweep_varying_keys(hc, argv)  # type: ignore[arg-type]  # HydraConf is a DictConfig at run time
        values = {}
        for item in hc.overrides.task:
            key, _, value = item.partition("=")
            key = key.lstrip("+~")
            if key in varying:
                values[key] = value
        names = short_names(sorted(values))
        name = ",".join(f"{names[k]}={values[k]}" for k in sorted(values)) or f"job{hc.job.num}"
        if sweep:
            tags.append(str(sweep))
    else:
        group = experiment
        name = f"{experiment}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    return {"group": group, "name": name, "tags": tags}


#: a W&B run's local directory: <save_dir>/wandb/[offline-]run-<YYYYmmdd_HHMMSS>-<run id>
_RUN_DIR = re.compile(r"(?:offline-)?run-(\d{8}_\d{6})-([A-Za-z0-9]+)")


def previous_run_id(save_dir: str | Path) -> str | None:
    """The id of the W&B run a run directory already started (the earliest one under
    ``<save_dir>/wandb``), or None for a run that has none yet."""
    found = []
    for path in (Path(save_dir) / "wandb").glob("*run-*"):
        m = _RUN_DIR.fullmatch(path.name)
        if m and path.is_dir():
            found.append((m.group(1), m.group(2)))
    return min(found)[1] if found else None


def resume_arguments(node: DictConfig) -> dict:
    """``id`` and ``resume`` for the W&B logger of ``conf/logger/wandb.yaml`` (``node``): the run
    its save_dir already holds, continued (``resume: allow`` unless set), so a resumed job never
    starts a second W&B run. {} when ``logger.wandb.id`` is set or there is no earlier run."""
    if node.get("id") or not node.get("save_dir"):
        return {}
    run_id = previous_run_id(node.save_dir)
    return {} if run_id is None else {"id": run_id, "resume": node.get("resume") or "allow"}


def continue_ranks_run(loggers) -> None:
    """After a fit whose ranks ran in processes this one started (``ddp_fork``): the W&B logger
    here never started a run; rank 0's (finished in that process) is continued by id for the
    end-of-run record, so the job stays one W&B run (its id: ``logger.wandb.id`` or the one
    under its save_dir)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is None and logger._id is None:
            run_id = previous_run_id(logger.save_dir) if logger.save_dir else None
            if run_id is not None:
                logger._id = run_id
                logger._wandb_init.update(id=run_id, resume=logger._wandb_init.get("resume") or "allow")
