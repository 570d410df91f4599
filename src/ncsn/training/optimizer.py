"""The optimizer of a training run, made from the ``optim.*`` keys (conf/optim/adam.yaml).

``Adam`` is a partial of ``torch.optim.Adam`` under the repository's key names (``beta1``,
``beta2``; ``fused: auto``) whose values are checked when it is made, so a bad one stops the run
before any work (a one-line ValueError naming ``optim.<key>``). ``ScoreModel.configure_optimizers``
calls it with the network's parameters.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.checks import is_number
from ..core.speed import adam_kwargs


def _need(key: str, value, ok: bool, allowed: str) -> None:
    if not ok:
        raise ValueError(f"optim.{key}={value!r} is invalid: must be {allowed}")


class Adam:
    """``Adam(...)(params, device)`` is ``torch.optim.Adam(params, lr, betas=(beta1, beta2), eps,
    weight_decay, amsgrad)``, with the fused kernel per ``fused`` (auto: on CUDA; ``core.speed.adam_kwargs``)."""

    def __init__(
        self,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        fused: bool | str = "auto",
    ):
        _need("lr", lr, is_number(lr) and lr > 0, "a number > 0")
        _need("beta1", beta1, is_number(beta1) and 0 <= beta1 < 1, "a number in [0, 1)")
        _need("beta2", beta2, is_number(beta2) and 0 <= beta2 < 1, "a number in [0, 1)")
        _need("eps", eps, is_number(eps) and eps > 0, "a number > 0")
        _need("weight_decay", weight_decay, is_number(weight_decay) and weight_decay >= 0, "a number >= 0")
        _need("amsgrad", amsgrad, isinstance(amsgrad, bool), "true or false")
        _need("fused", fused, fused is True or fused is False or fused == "auto", "true, false or auto")
        self.hparams: dict[str, Any] = {
            "lr": lr,
            "betas": (beta1, beta2),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        }
        self.fused = fused

    def __call__(self, params, device) -> torch.optim.Adam:
        return torch.optim.Adam(params, **self.hparams, **adam_kwargs(device, self.fused))
