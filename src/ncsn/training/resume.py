"""What exact resume needs, in one place.

A resumed run must train on the same batches, with the same random draws, as a straight run:

* ``capture_rng_states`` / ``restore_rng_states``: the Python, NumPy and torch generator states,
  saved in every checkpoint (``ScoreModel.on_save_checkpoint``) and restored on load;
* ``record_progress`` / ``rebuild_loop_state``: our own record of where a checkpoint was written,
  from which the fit loop's state is rebuilt as a straight run has it (any checkpoint of any
  process, including one that was itself resumed);
* ``resume_where_fit_stopped``: repairs the loop state Lightning 2.6 writes when ``max_steps`` ends
  ``fit`` (called from ``ScoreModel.on_load_checkpoint``, before Lightning restores its loops).

Where in its epoch a restored run stands (so the training sampler skips the batches that epoch
already trained) is read by the data layer itself: ``data.base.resume_position``.

Training augmentation is keyed by (seed, epoch, index) (``data.base.Augmented``), so it needs no
state here.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng_states() -> dict:
    """Python, NumPy and torch (CPU, CUDA) generator states as plain tensors and numbers, so a
    checkpoint holding them still loads with torch's weights-only unpickler."""
    np_state: tuple = np.random.get_state()  # type: ignore[assignment]  # legacy=True: a tuple
    states: dict = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def resume_where_fit_stopped(checkpoint: dict) -> None:
    """Workaround for Lightning 2.6 (called before it restores its loops from ``checkpoint``).

    ``last.ckpt`` written at the end of ``fit`` (stopped by ``max_steps``) records the epoch as
    finished but keeps its batch counter. Restored as is, Lightning starts the next epoch and ends
    it early by that many batches, so "the same command, longer" would train on other batches than
    a straight run. When no epoch is in progress but the batch counter is not zero:

    * the epoch did end (its last batch was trained): zero the counter, the next epoch runs whole;
    * ``max_steps`` stopped it mid-epoch: record the state Lightning writes after a training batch
      (epoch started, not finished; the last batch not yet counted as completed), so the run resumes
      that epoch where it stopped (and ``resume_position`` skips the batches already trained).

    Lightning's logging step after such restarts can be one off (``align_logging_step`` fixes it).
    """
    loop = (checkpoint.get("loops") or {}).get("fit_loop")
    if not loop or "epoch_progress" not in loop or "epoch_loop.batch_progress" not in loop:
        return
    epochs, batches = loop["epoch_progress"], loop["epoch_loop.batch_progress"]
    e, b = epochs["current"], batches["current"]
    if not (e["ready"] == e["started"] == e["processed"] == e["completed"] and b["ready"]):
        return
    if batches["is_last_batch"]:
        batches["current"] = {k: 0 for k in b}
        batches["is_last_batch"] = False
    elif e["completed"] > 0 and b["completed"] == b["processed"] == b["ready"]:
        for progress in (epochs["current"], epochs["total"]):
            progress["processed"] -= 1
            progress["completed"] -= 1
        for progress in (batches["current"], batches["total"]):
            progress["completed"] -= 1


#: Our own record of where a checkpoint was written (``ScoreModel.on_save_checkpoint``), so resume
#: does not depend on Lightning's loop counters: a process that was itself resumed writes them
#: differently from a straight run (Lightning 2.6 does not count the epoch it restarts in as
#: started), and a checkpoint written after an epoch's last batch, before its validation, is
#: resumed by Lightning without that validation.
PROGRESS_KEY = "ncsn_progress"


def record_progress(trainer, in_batch: bool, epoch_closed: bool) -> dict:
    """Where fit stands while a checkpoint is written.

    ``in_batch``: written from a callback's ``on_train_batch_end`` (the batch is trained, its
    epoch-loop bookkeeping and any validation after it are not done yet); ``epoch_closed``: the
    epoch's training part ended (``on_train_epoch_end`` ran)."""
    loop = trainer.fit_loop
    epochs, batches = loop.epoch_progress.current, loop.epoch_loop.batch_progress
    last = bool(batches.is_last_batch or batches.current.ready == trainer.num_training_batches)
    return {
        "global_step": int(trainer.global_step),
        "epoch": int(trainer.current_epoch),
        "epochs_started": int(epochs.processed if epoch_closed else epochs.processed + 1),
        "batches_in_epoch": int(batches.current.ready),
        "last_batch": last,
        "in_batch": bool(in_batch),
        "epoch_closed": bool(epoch_closed),
        # validation (and samples, FID) still to run for this epoch
        "val_pending": bool(in_batch and last and not epoch_closed and loop.epoch_loop._should_check_val_epoch()),
    }


def rebuild_loop_state(checkpoint: dict) -> None:
    """Make Lightning's fit-loop state in ``checkpoint`` the one a straight run writes at the same
    point, from our own record (``PROGRESS_KEY``); checkpoints without it are left as they are.

    * epochs started (ready, started) = the epoch in progress + 1, as in a straight run;
    * written after an epoch's last batch, before the epoch's end: Lightning would end that epoch
      without its validation (and start the next one uncounted). The batch is recorded as
      completed; if validation was due, the validation loop is recorded as started and not
      finished, so Lightning runs it on restart, at the same step as a straight run; if not, the
      step counter Lightning would have advanced after the batch is advanced here. The training
      sampler yields nothing more of that epoch (``data.base.resume_position``): Lightning, which
      does not end a restarted epoch before its validation has run, would otherwise train one more
      batch in it wherever ``trainer.limit_train_batches`` ends epochs before their data does.
    """
    progress = checkpoint.get(PROGRESS_KEY)
    loop = (checkpoint.get("loops") or {}).get("fit_loop")
    if not progress or not loop or "epoch_progress" not in loop:
        return
    for part in ("total", "current"):
        loop["epoch_progress"][part]["ready"] = progress["epochs_started"]
        loop["epoch_progress"][part]["started"] = progress["epochs_started"]
    if progress["in_batch"] and progress["last_batch"] and not progress["epoch_closed"]:
        batches = loop["epoch_loop.batch_progress"]
        for part in ("total", "current"):
            batches[part]["completed"] = batches[part]["processed"]
        batches["is_last_batch"] = True
        if progress["val_pending"]:
            val = loop["epoch_loop.val_loop.batch_progress"]
            for part in ("total", "current"):
                val[part] = {"ready": 1, "started": 1, "processed": 0, "completed": 0}
            val["is_last_batch"] = False
        else:
            loop["epoch_loop.state_dict"]["_batches_that_stepped"] = progress["global_step"]


def hold_fit_for_final_validation(trainer, checkpoint: dict) -> int | None:
    """A checkpoint whose step reaches ``trainer.max_steps``, written after the epoch's last batch
    with its validation (samples, FID) still due (``val_pending``: a kill during that validation):
    Lightning would end fit at once ("max_steps reached") without it. Raise ``max_steps`` by one,
    so the fit loop runs once more and the restored epoch runs its pending validation at the
    step a straight run does (``rebuild_loop_state``; the training sampler has nothing left of
    that epoch: ``data.base.resume_position``). Returns the ``max_steps`` to put back once that
    validation has ended (``release_final_validation``), None when nothing was held."""
    progress = checkpoint.get(PROGRESS_KEY) or {}
    max_steps = trainer.fit_loop.max_steps
    if not progress.get("val_pending") or max_steps is None or not 0 <= max_steps <= progress["global_step"]:
        return None
    trainer.fit_loop.epoch_loop.max_steps = progress["global_step"] + 1
    return max_steps


def release_final_validation(trainer, max_steps: int) -> None:
    """After the held validation (``hold_fit_for_final_validation``): fit ends at ``max_steps``."""
    trainer.fit_loop.epoch_loop.max_steps = max_steps


def align_logging_step(trainer) -> None:
    """Called at each training batch start: the step Lightning logs with (``_batches_that_stepped``)
    is, in a straight run without gradient accumulation, the global step (a batch skipped by
    ``on_nonfinite=skip`` counts as a step too). Lightning 2.6 restarts some checkpoints one off
    (e.g. an end-of-fit ``last.ckpt`` at an epoch boundary before a validation epoch: it spends
    one loop iteration skipping that validation); set it right, so metrics.csv and W&B rows carry
    the same steps as a straight run."""
    if trainer.accumulate_grad_batches != 1:
        return
    loop = trainer.fit_loop.epoch_loop
    expected = int(trainer.global_step)
    if loop._batches_that_stepped != expected:
        loop._batches_that_stepped = expected
