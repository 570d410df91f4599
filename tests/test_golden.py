"""Parity kept through refactors: outputs recorded (tests/golden/make_golden.py) from the code
that matched the reference implementations to float32 rounding.

Each network is rebuilt at the same small width with the same deterministic weights, and its
output, one DSM loss with its gradient norm, and annealed Langevin samples must
equal the recorded values to float32 rounding: a relative max difference of at most 1e-5 (the
values were recorded on another processor; library math differs in the last bits: see README,
"Tolerances").
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"
_spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
make_golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_golden)

VALUES = torch.load(GOLDEN / "values.pt", weights_only=True)
SIGMAS, NETS = make_golden.build_nets()


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-5) -> None:
    err = (a - b).abs().max() / b.abs().max().clamp_min(1e-12)
    assert err <= rtol, f"relative max difference {float(err):.3g} > {rtol}"


def _loaded(name: str) -> torch.nn.Module:
    return make_golden.fill_weights(NETS[name][0]())


@pytest.mark.parametrize("name", sorted(NETS))
def test_network_outputs_match_golden(name):
    shape = NETS[name][1]
    net = _loaded(name)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(2))
    levels = torch.arange(shape[0]) % len(SIGMAS)
    with torch.no_grad():
        out = net(x, levels)
    _close(out, VALUES[f"{name}/out"])


def test_sigmas_match_golden():
    """The levels are computed element by element with Python's math (ncsn.core.sigmas), so they are the
    same float64 numbers on every machine; compared to 2 ulp all the same (a C library may round
    exp differently on another platform). The networks see them cast to float32: equal there."""
    assert SIGMAS.dtype == torch.float64
    assert torch.allclose(SIGMAS, VALUES["sigmas"], rtol=4.5e-16, atol=0.0)
    assert torch.equal(SIGMAS.float(), VALUES["sigmas"].float())


def test_dsm_loss_and_gradient_match_golden():
    from ncsn.core.losses import dsm_loss

    net = _loaded("small_conv")
    g = torch.Generator().manual_seed(3)
    x = torch.rand((6, 1, 8, 8), generator=g)
    out = dsm_loss(net, x, SIGMAS, 2.0, generator=g)
    out.loss.backward()
    grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in net.parameters() if p.grad is not None))
    assert torch.equal(out.level_index, VALUES["dsm/level_index"])
    _close(out.loss.detach(), VALUES["dsm/loss"])
    _close(grad_norm, VALUES["dsm/grad_norm"])


@pytest.mark.parametrize("denoise", [False, True])
def test_annealed_langevin_matches_golden(denoise):
    from ncsn.sampling import annealed_langevin

    net = _loaded("small_conv")
    x0 = torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(5)
    res = annealed_langevin(net, x0, SIGMAS, 2e-5, 3, denoise=denoise, generator=g, progress=False)
    _close(res.samples, VALUES[f"langevin/denoise={denoise}"])
