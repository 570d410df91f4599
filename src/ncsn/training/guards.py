"""What a training step does with a loss that is not a number, or one that explodes.

``NonFiniteGuard`` holds the three ``loss.*`` settings of it and checks them in its constructor
(a one-line ValueError naming the key); ``ScoreModel`` asks it at every step. Plain Python.
"""

from __future__ import annotations

import logging
import math

from ..core.checks import is_int, is_number

log = logging.getLogger(__name__)

NONFINITE_POLICIES = ("raise", "skip")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class NonFiniteGuard:
    """``on_nonfinite``: a NaN/inf loss raises NonFiniteLossError (raise) or skips its batch (skip),
    at most ``max_skipped`` batches (None: no limit). ``explode_factor``: warn once when a finite
    loss exceeds this times its running minimum (None: off); the warning is kept in ``warning``."""

    def __init__(
        self, on_nonfinite: str = "raise", max_skipped: int | None = 100, explode_factor: float | None = 1000.0
    ):
        if on_nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"loss.on_nonfinite={on_nonfinite!r} is invalid: must be 'raise' or 'skip'")
        if not (max_skipped is None or (is_int(max_skipped) and max_skipped >= 0)):
            raise ValueError(f"loss.max_skipped={max_skipped!r} is invalid: must be null or an integer >= 0")
        if not (explode_factor is None or (is_number(explode_factor) and explode_factor > 1)):
            raise ValueError(f"loss.explode_factor={explode_factor!r} is invalid: must be null or a number > 1")
        self.on_nonfinite, self.max_skipped, self.explode_factor = on_nonfinite, max_skipped, explode_factor
        self.warning: str | None = None  # set once when the loss explodes (results.json)
        self._loss_min = math.inf

    def nonfinite(self, message: str, skipped: int) -> None:
        """A non-finite loss (``message``: where, and at which levels); ``skipped``: the batches
        skipped so far, this one included. Raises unless this batch may be skipped."""
        if self.on_nonfinite == "raise":
            raise NonFiniteLossError(message + ". Set loss.on_nonfinite=skip to skip such batches.")
        if self.max_skipped is not None and skipped > self.max_skipped:
            raise NonFiniteLossError(
                f"{message}; {skipped} batches skipped, more than loss.max_skipped={self.max_skipped}"
            )

    def watch(self, loss: float, step: int) -> None:
        """Warn once (logged, and kept in ``warning``) when the finite training ``loss`` exceeds
        ``explode_factor`` times its running minimum."""
        self._loss_min = min(self._loss_min, loss)
        if self.explode_factor is None or self.warning is not None or self._loss_min <= 0:
            return
        if loss > self.explode_factor * self._loss_min:
            self.warning = (
                f"training loss exploding: {loss:.4g} at global step {step}, "
                f"{loss / self._loss_min:.3g} times its running minimum {self._loss_min:.4g} "
                f"(loss.explode_factor={self.explode_factor}); consider a lower optim.lr"
            )
            log.warning(self.warning)
