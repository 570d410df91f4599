"""Reading a sweep: the job directories, their configs, overrides, results and metrics history."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml

from ..core.checks import flatten


@dataclass
class Job:
    name: str  # path relative to the sweep directory
    config: dict  # flattened config (+ override-only keys)
    override_keys: list  # keys named by the job's overrides, in their order
    results: dict | None  # results.json, None when absent or unreadable
    status: str  # "finished", "unfinished", or what results.json / the loader says
    note: str = ""  # for unfinished jobs: last log line, last logged step
    path: Path | None = None  # the job directory
    history: dict = field(default_factory=dict)  # metrics.csv: {column: [(step, value), ...]}
    skipped: str = ""  # why the job is left out of the comparison (its config cannot be read)
    has_overrides: bool = False  # .hydra/overrides.yaml was read: the settings are what it names
    rescores: dict = field(default_factory=dict)  # sample.py mode=rescore: {tag: <job>/rescore/<tag>/results.json}

    @property
    def finished(self) -> bool:
        return self.status == "finished"


# -- reading ----------------------------------------------------------------------------------
def _load_config(path: Path) -> dict:
    """The config as a plain dict; interpolations are resolved where OmegaConf can."""
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(path)
        try:
            return cast(dict, OmegaConf.to_container(cfg, resolve=True))
        except Exception:
            return cast(dict, OmegaConf.to_container(cfg, resolve=False))
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return yaml.safe_load(path.read_text()) or {}


def _override_items(path: Path) -> list:
    """[(key, value), ...] from Hydra's overrides.yaml ("+a.b=1", "~c" -> ("c", None))."""
    if not path.is_file():
        return []
    items = []
    for o in yaml.safe_load(path.read_text()) or []:
        key, _, text = str(o).partition("=")
        value: Any = text
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            pass
        items.append((key.lstrip("+~"), value))
    return items


def training_settings(config: dict, keys: list) -> tuple[dict, list]:
    """A sample.py job that re-scores a training job's checkpoint (``ckpt_path`` named on its
    command line): the training job's overrides (``.hydra/overrides.yaml`` of the directory holding
    the checkpoint folder) as ``train_config.<key>`` settings, valued from the checkpoint's saved
    config (``train_config``) where it has the key, in place of ``ckpt_path``. Unchanged when the
    training job's record is not found."""
    ckpt = config.get("ckpt_path")
    if "ckpt_path" not in keys or not isinstance(ckpt, str) or not any(k.startswith("train_config.") for k in config):
        return config, keys
    for parent in list(Path(ckpt).parents)[:3]:
        items = _override_items(parent / ".hydra" / "overrides.yaml")
        if items:
            break
    else:
        return config, keys
    config = {k: v for k, v in config.items() if k != "ckpt_path"}
    added = []
    for key, value in items:
        if key.startswith("hydra.") or key == "hydra":
            continue
        added.append(f"train_config.{key}")
        config.setdefault(f"train_config.{key}", value)
    at = keys.index("ckpt_path")
    return config, [*keys[:at], *added, *keys[at + 1 :]]


def _last_log_line(job_dir: Path) -> str:
    logs = sorted(job_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:200]
    return ""


def _num(v) -> float:
    try:
        return float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        return math.nan


def read_history(job_dir: Path) -> dict:
    """metrics.csv as {column: [(step, value), ...]} (numeric cells only, in file order)."""
    path = Path(job_dir) / "metrics.csv"
    out: dict[str, list] = {}
    if not path.is_file():
        return out
    for r in csv.DictReader(path.open(newline="")):
        step = _num(r.get("step"))
        for k, v in r.items():
            if k in ("step", "epoch") or k is None:
                continue
            x = _num(v) if v not in (None, "") else math.nan
            if not math.isnan(x):
                out.setdefault(k, []).append((None if math.isnan(step) else int(step), x))
    return out


def _last_step(job_dir: Path) -> str:
    path = job_dir / "metrics.csv"
    if not path.is_file():
        return ""
    steps = [r.get("step") for r in csv.DictReader(path.open(newline=""))]
    given = [s for s in steps if s]  # a csv cell: None or "" when empty
    return given[-1] if given else ""


def load_job(job_dir: Path, sweep_dir: Path) -> Job:
    """Read one job directory; problems become the job's status, never an exception."""
    name = str(job_dir.relative_to(sweep_dir)) if job_dir != sweep_dir else "."
    config, keys, results, status, history, skipped = {}, [], None, "unfinished", {}, ""
    try:
        loaded = _load_config(job_dir / ".hydra" / "config.yaml")
        if not isinstance(loaded, dict) or not loaded:
            raise ValueError("the file is empty" if not loaded else f"a {type(loaded).__name__}, not a mapping")
        config = flatten(loaded)
    except Exception as e:  # noqa: BLE001 - report, don't crash: the job is left out of the table
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        status = skipped = f"unreadable config ({type(e).__name__}: {first[:120]})"
    has_overrides = not skipped and (job_dir / ".hydra" / "overrides.yaml").is_file()
    try:
        for key, value in [] if skipped else _override_items(job_dir / ".hydra" / "overrides.yaml"):
            keys.append(key)
            config.setdefault(key, value)
        config, keys = training_settings(config, keys)
    except Exception:  # noqa: BLE001 - a broken overrides.yaml: the config alone says what varies
        keys, has_overrides = [], False
    res_path = job_dir / "results.json"
    if res_path.is_file():
        try:
            results = json.loads(res_path.read_text())
            if not isinstance(results, dict):
                raise ValueError("not a JSON object")
            if status == "unfinished":
                status = str(results.get("status", "finished"))
        except Exception as e:  # noqa: BLE001
            results, status = None, f"bad results.json ({type(e).__name__})"
    try:
        history = read_history(job_dir)
    except Exception:  # noqa: BLE001 - a broken metrics.csv leaves the results.json values
        history = {}
    note = ""
    if status != "finished":
        try:
            step, line = _last_step(job_dir), _last_log_line(job_dir)
            note = "; ".join(x for x in (f"last logged step {step}" if step else "", line) if x)
        except Exception:  # noqa: BLE001
            pass
    job = Job(name, config, keys, results, status, note, job_dir, history, skipped, has_overrides)
    job.rescores = read_rescores(job_dir)
    return job


def read_rescores(job_dir: Path) -> dict:
    """{tag: results} of the complete re-scores beside a job (``rescore/<tag>/results.json`` with
    ``"status": "finished"``; a killed one's partial folder starts with a dot and is not read)."""
    out = {}
    for path in sorted(Path(job_dir).glob("rescore/*/results.json")):
        if path.parent.name.startswith("."):
            continue
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(results, dict) and results.get("status") == "finished":
            out[path.parent.name] = results
    return out


def _natural(name: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def find_jobs(sweep_dir) -> list:
    """All job directories (those with ``.hydra/config.yaml``) under ``sweep_dir``, naturally sorted."""
    sweep_dir = Path(sweep_dir)
    dirs = {p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml")}
    return [load_job(d, sweep_dir) for d in sorted(dirs, key=lambda d: _natural(str(d.relative_to(sweep_dir))))]
