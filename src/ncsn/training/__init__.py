"""The Lightning layer: thin glue around the math modules.

    score_model.py    ScoreModel, the LightningModule (network + DSM loss object + optimizer + EMA)
    optimizer.py      Adam: the optimizer partial made from optim.* (its values checked when made)
    guards.py         NonFiniteGuard: a NaN/inf loss raises or skips its batch; an exploding loss warns
    callbacks.py      periodic samples and FID on the EMA weights, SIGTERM checkpoint
    checkpoint_io.py  atomic checkpoint writes, weights-only reads
    loggers.py        W&B that never hangs, a CSV logger that survives resumes
    resume.py         what exact resume needs: RNG states, Lightning's loop state, skipped batches

Nothing here reads a Hydra config: the workflow layer (``ncsn.workflow``) builds these objects
from plain arguments.
"""
