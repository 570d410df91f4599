"""What exact resume needs, in one place.

A resumed run must train on the same batches, with the same random draws, as a straight run:

* ``capture_rng_states`` / ``restore_rng_states``: the Python, NumPy and torch generator states,
  saved in every checkpoint (``ScoreModel.on_save_checkpoint``) and restored on load;
* ``resume_where_fit_stopped``: repairs the loop state Lightning 2.6 writes when ``max_steps`` ends
  ``fit`` (called from ``ScoreModel.on_load_checkpoint``, before Lightning restores its loops);
* ``resume_position``: where in its epoch a restored run stands, so the training sampler
  (``data.base.EpochShuffle``) skips the batches that epoch already trained.

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
    np_state = np.random.get_state()
    states = {
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


def resume_position(trainer, batch_size: int) -> tuple[int, int] | None:
    """(epoch, examples this rank already trained in it) when ``trainer`` is restarting from a
    mid-epoch checkpoint, else None. Reads Lightning's restored ``batch_progress`` (made consistent
    for the checkpoint that ``max_steps`` leaves by ``resume_where_fit_stopped``)."""
    if trainer is None or not trainer.fit_loop.restarting:
        return None
    progress = trainer.fit_loop.epoch_loop.batch_progress
    if progress.current.ready and not progress.is_last_batch:
        return trainer.current_epoch, progress.current.ready * batch_size
    return None


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
