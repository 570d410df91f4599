"""Record the golden values of tests/test_golden.py (run once, before a refactor of the math).

    python tests/golden/make_golden.py     # writes tests/golden/values.pt

For fixed seeds: the output of each network at small width, one DSM loss and its gradient norm,
and a few annealed Langevin samples. The code these were recorded from matched the reference
implementations (ermongroup/ncsn, ermongroup/ncsnv2) to float32 rounding, so they are the parity
that later refactors must keep. Regenerate only for a deliberate, documented change.
"""

from __future__ import annotations

from pathlib import Path

import torch

OUT = Path(__file__).with_name("values.pt")


def build_nets():
    """(name, constructor) of each network at small width; the same calls must still work."""
    from ncsn.nets.mlp import ConditionalMLP
    from ncsn.nets.ncsnv2 import NCSNv2, NCSNv2Deeper
    from ncsn.nets.refinenet import CondRefineNetDilated
    from ncsn.nets.small_conv import SmallConvScoreNet
    from ncsn.sigmas import make_sigmas

    sigmas = make_sigmas("geometric", 1.0, 0.01, 5)
    return sigmas, {
        "ncsn": (lambda: CondRefineNetDilated(sigmas, in_channels=3, ngf=8), (2, 3, 16, 16)),
        "ncsnv2": (lambda: NCSNv2(sigmas, in_channels=3, ngf=8), (2, 3, 16, 16)),
        "ncsnv2_deeper": (lambda: NCSNv2Deeper(sigmas, in_channels=3, ngf=8), (2, 3, 16, 16)),
        "small_conv": (lambda: SmallConvScoreNet(sigmas, in_channels=1, ngf=8, num_blocks=2), (2, 1, 8, 8)),
        "mlp": (lambda: ConditionalMLP(sigmas, dim=2, hidden=16, num_layers=2), (4, 2)),
    }


def compute() -> dict:
    from ncsn.losses import dsm_loss
    from ncsn.sampling import annealed_langevin

    torch.manual_seed(0)
    sigmas, nets = build_nets()
    values = {"sigmas": sigmas}
    for name, (make, shape) in nets.items():
        torch.manual_seed(1)
        net = make()
        g = torch.Generator().manual_seed(2)
        x = torch.rand(shape, generator=g)
        levels = torch.arange(shape[0]) % len(sigmas)
        with torch.no_grad():
            values[f"{name}/out"] = net(x, levels)
        values[f"{name}/state_dict"] = {k: v.clone() for k, v in net.state_dict().items()}

    # one DSM loss and its gradient norm (small_conv, fixed generator)
    torch.manual_seed(1)
    net = nets["small_conv"][0]()
    g = torch.Generator().manual_seed(3)
    x = torch.rand((6, 1, 8, 8), generator=g)
    out = dsm_loss(net, x, sigmas, 2.0, generator=g)
    out.loss.backward()
    grad_norm = torch.sqrt(sum((p.grad**2).sum() for p in net.parameters() if p.grad is not None))
    values["dsm/loss"] = out.loss.detach()
    values["dsm/level_index"] = out.level_index
    values["dsm/grad_norm"] = grad_norm.detach()

    # annealed Langevin (NCSN Algorithm 1) with and without the final denoising step, one generator
    net.zero_grad()
    x0 = torch.rand((3, 1, 8, 8), generator=torch.Generator().manual_seed(4))
    for denoise in (False, True):
        g = torch.Generator().manual_seed(5)
        res = annealed_langevin(net, x0, sigmas, 2e-5, 3, denoise=denoise, generator=g, progress=False)
        values[f"langevin/denoise={denoise}"] = res.samples
    return values


if __name__ == "__main__":
    torch.save(compute(), OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
