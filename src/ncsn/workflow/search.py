"""Hyperparameter search with Optuna: the sweeper behind ``python train.py -m hparams_search=...``.

Each trial is one training job composed by Hydra (``hydra.sweep.dir/<trial number>``, launched by
the configured launcher: local or SLURM). The study lives in persistent storage, by default a
journal file in the sweep directory (``optuna.journal``; or any Optuna storage URL, e.g.
``sqlite:///...``), so:

- a killed search resumes: the same command with the same ``hydra.sweep.dir`` goes on until the
  study holds ``n_trials`` trials; a trial left RUNNING by a process of this host that died is run
  again in its own job directory (which resumes from its last checkpoint);
- several processes or nodes running the same command share one study (each asks for new trials);
- trials are pruned on their intermediate FID: the training job reports every evaluation of the
  objective's metric to the study (``training.pruning.TrialPruning``) and stops early when the
  configured pruner (median, successive halving, ...) says so; its results.json says ``pruned``.

Why not Hydra's Optuna plugin: hydra-optuna-sweeper (1.2, 1.3) pins optuna < 3 (2021), which has
no journal storage, and the plugin reports only final values (no pruning) and has no way to pick
up a killed search's unfinished trials. Search spaces keep its syntax (``interval``, ``range``,
``choice``, ``tag(log, ...)``); ``range(a, b, step=s)`` means Python's range: ``b`` excluded.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..training.pruning import open_storage
from .runlock import pid_alive

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")
OWNER = "ncsn_owner"  # trial user attribute: the process that runs it ({"host", "pid"})


def distribution(key: str, value) -> Any:
    """The Optuna distribution of one sweep override value (Hydra's override grammar)."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    tags = set(getattr(value, "tags", ()) or ())
    if tags - {"log", "int"}:
        raise ValueError(
            f"hydra.sweeper.params.{key}: unknown tags {sorted(tags - {'log', 'int'})} (allowed: log, int)"
        )
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))  # type: ignore[arg-type]
    if isinstance(value, IntervalSweep):
        low, high = value.start, value.end
        if low is None or high is None:
            raise ValueError(f"hydra.sweeper.params.{key}: interval({low}, {high}) needs both ends")
        if "int" in tags:
            return IntDistribution(int(low), int(high), log="log" in tags)
        return FloatDistribution(float(low), float(high), log="log" in tags)
    if isinstance(value, RangeSweep):
        start: Any = value.start
        stop: Any = value.stop
        step: Any = value.step
        if start is None or stop is None or step is None or step <= 0 or not stop > start:
            raise ValueError(f"hydra.sweeper.params.{key}: range({start}, {stop}, step={step}) is empty")
        n = math.ceil((stop - start) / step - 1e-9)  # Python's range: stop excluded
        last = start + (n - 1) * step
        if all(isinstance(v, int) for v in (start, stop, step)):
            return IntDistribution(start, last, step=step)
        return FloatDistribution(float(start), float(last), step=float(step))
    raise ValueError(f"hydra.sweeper.params.{key}={value!r}: use interval(...), range(...) or choice(...)")


def search_space(params: dict, arguments: list[str]) -> tuple[dict, list[str]]:
    """({key: distribution}, [fixed overrides]) from ``hydra.sweeper.params`` and the command line
    (a key given on the command line replaces the config's entry for it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    space: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(key, override.value())
        else:
            fixed[key] = override.input_line
    return space, list(fixed.values())


def format_value(value) -> str:
    """A sampled value as the override it is trained with: floats to 4 significant digits (the
    trial's name and config read cleanly; the value trained is the rounded one)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "null" if value is None else str(value)


def study_location(storage: str | None, sweep_dir: str | Path) -> str:
    """The storage a search uses: an Optuna storage URL, a journal file path, or (null) the
    journal file ``optuna.journal`` in the sweep directory."""
    return str(storage) if storage else str(Path(sweep_dir) / "optuna.journal")


def stale(trial, host: str) -> bool:
    """A RUNNING trial whose process, on this host, is gone (killed): run it again."""
    owner = trial.user_attrs.get(OWNER) or {}
    return owner.get("host") == host and not pid_alive(int(owner.get("pid", -1)))


class OptunaSearch:
    """The sweep logic of ``hydra_plugins.ncsn_optuna.NcsnOptunaSweeper`` (Hydra's Sweeper API:
    ``setup`` then ``sweep``); see the module docstring."""

    def __init__(
        self,
        direction: str,
        study_name: str,
        storage: str | None,
        n_trials: int,
        seed: int | None,
        max_failure_rate: float,
        pruner: Any,
        params: DictConfig | dict | None,
    ):
        if direction not in DIRECTIONS:
            raise ValueError(f"hydra.sweeper.direction={direction!r} is invalid: must be one of {DIRECTIONS}")
        if not (isinstance(n_trials, int) and n_trials >= 1):
            raise ValueError(f"hydra.sweeper.n_trials={n_trials!r} is invalid: must be an integer >= 1")
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate={max_failure_rate!r} is invalid: must be in [0, 1]")
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.seed, self.max_failure_rate = n_trials, seed, max_failure_rate
        self.pruner = pruner
        self.params: Any = OmegaConf.to_container(params) if isinstance(params, DictConfig) else dict(params or {})
        self.launcher: Any = None  # the launcher, the config and the optuna storage: set by setup, open_study
        self.config: Any = None
        self.storage_obj: Any = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def open_study(self, sweep_dir: Path):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        where = study_location(self.storage, sweep_dir)
        self.storage_obj = open_storage(where)
        return optuna.create_study(
            study_name=self.study_name,
            storage=self.storage_obj,
            sampler=optuna.samplers.TPESampler(seed=self.seed_now(where)),
            pruner=self.pruner,
            direction=self.direction,  # type: ignore[arg-type]  # one of DIRECTIONS (checked)
            load_if_exists=True,
        ), where

    def seed_now(self, where: str) -> int | None:
        """The sampler's seed: ``seed`` plus the trials the study already holds, so a resumed
        search does not draw its first trials' settings again."""
        import optuna

        if self.seed is None:
            return None
        try:
            return self.seed + len(optuna.load_study(study_name=self.study_name, storage=self.storage_obj).trials)
        except KeyError:  # a new study
            return self.seed

    def sweep(self, arguments: list[str]) -> None:
        from optuna.trial import TrialState

        sweep_dir = Path(self.config.hydra.sweep.dir)
        space, fixed = search_space(self.params, arguments)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study, where = self.open_study(sweep_dir)
        log.info("Optuna study %r in %s (%d trials so far)", self.study_name, where, len(study.trials))
        host, failed, ran = socket.gethostname(), 0, 0
        while True:
            trials = study.get_trials(deepcopy=False)
            redo = [t for t in trials if t.state == TrialState.RUNNING and stale(t, host)]
            if redo:
                number, params = redo[0].number, redo[0].params
                log.info("trial %d was left running by a process that is gone: running it again", number)
            elif len(trials) >= self.n_trials:
                break
            else:
                trial = study.ask(fixed_distributions=space)
                number, params = trial.number, trial.params
            storage = self.storage_obj
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(self.study_name), number
            )
            storage.set_trial_user_attr(trial_id, OWNER, {"host": host, "pid": os.getpid()})
            overrides = [*fixed, *(f"{k}={format_value(v)}" for k, v in params.items())]
            ret = self.launcher.launch([overrides], initial_job_idx=number)[0]
            ran += 1
            failed += self.tell(study, number, ret)
            if failed / ran > self.max_failure_rate:
                raise RuntimeError(
                    f"{failed} of {ran} trials failed: more than hydra.sweeper.max_failure_rate={self.max_failure_rate}"
                )
        self.write_results(study, sweep_dir)

    def tell(self, study, number: int, ret) -> int:
        """Record a finished job in the study; 1 if it failed."""
        import json

        from hydra.core.utils import JobStatus
        from optuna.trial import TrialState

        if ret.status != JobStatus.COMPLETED:
            study.tell(number, state=TrialState.FAIL)
            log.warning("Failed experiment: %s", ret._return_value)
            return 1
        results = Path(ret.hydra_cfg.hydra.runtime.output_dir) / "results.json"
        status = json.loads(results.read_text()).get("status") if results.is_file() else None
        if status == "pruned":
            study.tell(number, state=TrialState.PRUNED)
            log.info("trial %d pruned", number)
            return 0
        try:
            value = float(ret._return_value)
        except (TypeError, ValueError):
            study.tell(number, state=TrialState.FAIL)
            log.warning("Failed experiment: trial %d returned no objective (%r)", number, ret._return_value)
            return 1
        study.tell(number, value)
        return 0

    def write_results(self, study, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        counts = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        for t in study.get_trials(deepcopy=False):
            if t.state.name.lower() in counts:
                counts[t.state.name.lower()] += 1
        out = {"name": "optuna", "study_name": self.study_name, "direction": self.direction, "trials": counts}
        if counts["complete"]:
            best = study.best_trial
            trained = {k: float(format_value(v)) if isinstance(v, float) else v for k, v in best.params.items()}
            out.update(best_trial=best.number, best_params=trained, best_value=best.value)
            log.info("Best value %.6g (trial %d): %s", best.value, best.number, best.params)
        OmegaConf.save(OmegaConf.create(out), sweep_dir / "optimization_results.yaml")


def trial_pruning(objective: str):
    """The pruning callback of a training job that this sweeper launched (None otherwise): it
    reports the per-evaluation metric of ``objective`` (``fid`` for ``fid/best``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    from ..training.pruning import TrialPruning

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if not str(hc.sweeper.get("_target_", "")).endswith("NcsnOptunaSweeper"):
        return None
    monitor = objective.removesuffix("/best")
    where = study_location(hc.sweeper.storage, hc.sweep.dir)
    return TrialPruning(where, hc.sweeper.study_name, int(hc.job.num), instantiate(hc.sweeper.pruner), monitor)
