"""Pruning of hyperparameter-search trials on their intermediate metric (Optuna).

``TrialPruning`` reports each evaluation of ``monitor`` (FID, logged by the samples callback on
the same validation epoch: list this callback after it) to the trial of the study in
``storage``, and stops training when the study's pruner says so: ``pruned`` is then True and the
run ends as ``pruned`` (no final samples). The search itself is ``ncsn.workflow.search``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L

log = logging.getLogger(__name__)


def open_storage(where: str):
    """An Optuna storage: a URL (``sqlite:///...``, ``postgresql://...``) or a journal file path
    (one file that several processes and nodes on a shared filesystem can use)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in where:
        return optuna.storages.get_storage(where)
    return JournalStorage(JournalFileBackend(where))


class TrialPruning(L.Callback):
    """Report ``monitor`` after each validation that logged it; stop when pruned (rank 0 decides,
    every rank stops: Lightning syncs ``should_stop``)."""

    def __init__(self, storage: str, study_name: str, trial_number: int, pruner, monitor: str = "fid"):
        self.storage, self.study_name, self.trial_number = storage, study_name, trial_number
        self.pruner, self.monitor = pruner, monitor
        self.pruned = False
        self._trial: Any = None  # optuna's trial, storage and trial id, opened by trial()
        self._storage: Any = None
        self._trial_id: Any = None

    def trial(self):
        if self._trial is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = open_storage(self.storage)
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=self.pruner)
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
            self._trial = optuna.trial.Trial(study, trial_id)
            self._storage, self._trial_id = storage, trial_id
        return self._trial

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        trial = self.trial()
        if trainer.global_step not in self._storage.get_trial(self._trial_id).intermediate_values:
            trial.report(float(value), trainer.global_step)  # a resumed trial does not report a step twice
        if trial.should_prune():
            self.pruned = True
            trainer.should_stop = True
            log.info(
                "trial %d pruned at step %d (%s %.4g)", self.trial_number, trainer.global_step, self.monitor, value
            )
