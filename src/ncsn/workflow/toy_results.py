"""What train.py's final samples and sample.py write for a 2-D mixture (the NCSN toy
experiment): the recovered mode weights and NCSN Fig. 3, with their numbers for results.json."""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.figures import toy_figure
from ..sampling.toy_panels import sampler_panels


def mode_weight_results(mixture, samples: torch.Tensor) -> dict:
    """``toy/mode_weights`` (the share of ``samples`` nearest each mode, 4 decimals) and
    ``toy/weight_error`` (the largest difference from the mixture's own weights)."""
    w = mixture.mode_weights(samples.cpu())
    return {
        "toy/mode_weights": [round(float(v), 4) for v in w],
        "toy/weight_error": float((w - mixture.weights).abs().max()),
    }


def toy_figure_results(mixture, sampler, net, seed: int, learned: torch.Tensor, path: Path) -> dict:
    """NCSN Fig. 3 at ``path``: data, plain and annealed Langevin with the exact scores, the learned
    score field and ``learned`` (what ``sampler`` drew with ``net``, seed ``seed``); returns its
    numbers as ``toy/figure_*``. Runs on the CPU (``net`` is moved there)."""
    net = net.cpu()
    panels = sampler_panels(mixture, net.sigmas.cpu(), sampler, net, seed, learned.cpu())
    toy_figure(panels, path, learned_label=sampler.name)
    return {f"toy/figure_{k}": v for k, v in panels.numbers().items()}
