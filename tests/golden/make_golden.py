"""Record the golden values of tests/test_golden.py (run once, before a refactor of the math).

    python tests/golden/make_golden.py     # writes tests/golden/values.pt, sampler_refactor.pt

For fixed seeds: the output of each network at small width (weights from ``fill_weights``), one
DSM loss and its gradient norm, and a few annealed Langevin samples. Recorded (with stored
weights) before the layering/sampling refactors from code that matched the reference
implementations (ermongroup/ncsn, ermongroup/ncsnv2) to float32 rounding; re-recorded with
``fill_weights`` (no stored weights) from the refactored code once it had passed the first
recording bit for bit. They are the parity later refactors must keep.
Regenerate only for a deliberate, documented change.
"""

from __future__ import annotations

from pathlib import Path

import torch

OUT = Path(__file__).with_name("values.pt")
SAMPLER_OUT = Path(__file__).with_name("sampler_refactor.pt")


def build_nets():
    """(name, constructor) of each network at small width; the same calls must still work."""
    from ncsn.core.sigmas import make_sigmas
    from ncsn.nets.mlp import ConditionalMLP
    from ncsn.nets.ncsnv2 import NCSNv2, NCSNv2Deeper
    from ncsn.nets.refinenet import CondRefineNetDilated
    from ncsn.nets.small_conv import SmallConvScoreNet

    sigmas = make_sigmas("geometric", 1.0, 0.01, 5)
    return sigmas, {
        "ncsn": (lambda: CondRefineNetDilated(sigmas, in_channels=3, ngf=8), (2, 3, 16, 16)),
        "ncsnv2": (lambda: NCSNv2(sigmas, in_channels=3, ngf=8), (2, 3, 16, 16)),
        "ncsnv2_deeper": (lambda: NCSNv2Deeper(sigmas, in_channels=3, ngf=8), (2, 3, 16, 16)),
        "small_conv": (lambda: SmallConvScoreNet(sigmas, in_channels=1, ngf=8, num_blocks=2), (2, 1, 8, 8)),
        "mlp": (lambda: ConditionalMLP(sigmas, dim=2, hidden=16, num_layers=2), (4, 2)),
    }


def fill_weights(net: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Deterministic weights independent of the constructor's init order: every floating tensor of
    the state_dict except the sigmas, in key order, from one seeded generator (N(0, 0.1^2), plus 1
    for the normalization scales). The recorded values so need no weights stored."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in sorted(net.state_dict().items()):
            if key.endswith("sigmas") or not torch.is_floating_point(value):
                continue
            fresh = 0.1 * torch.randn(value.shape, generator=g)
            if key.endswith(("gamma", "alpha")):
                fresh += 1.0
            value.copy_(fresh)
    return net


def compute() -> dict:
    from ncsn.core.losses import dsm_loss
    from ncsn.sampling import annealed_langevin

    torch.manual_seed(0)
    sigmas, nets = build_nets()
    values = {"sigmas": sigmas}
    for name, (make, shape) in nets.items():
        net = fill_weights(make())
        g = torch.Generator().manual_seed(2)
        x = torch.rand(shape, generator=g)
        levels = torch.arange(shape[0]) % len(sigmas)
        with torch.no_grad():
            values[f"{name}/out"] = net(x, levels)

    # one DSM loss and its gradient norm (small_conv, fixed generator)
    net = fill_weights(nets["small_conv"][0]())
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


def compute_sampler() -> dict:
    """The Sampler (annealed, langevin) and inpainting paths on small_conv (``fill_weights``).

    First recorded with the single-module sampler before the sampling package existed (one
    torch.Generator for the whole batch, batches of 3) and stored weights; re-recorded with
    ``fill_weights`` from code that reproduced that first recording bit for bit."""
    from ncsn.sampling import Annealed, Langevin, Sampler
    from ncsn.sampling.inpainting import annealed_langevin_inpaint, make_mask

    sigmas, nets = build_nets()
    net = fill_weights(nets["small_conv"][0]()).eval()
    values = {}
    for kind, k in (("annealed", Annealed(2e-5, 3)), ("langevin", Langevin(2e-5, 3 * len(sigmas), 3))):
        s = Sampler(k, n_samples=7, batch_size=3, denoise=True)
        r = s.draw(net, sigmas, (1, 8, 8), torch.Generator().manual_seed(11), progress=False, keep_frames=True)
        values[f"{kind}/samples"] = r.samples
        values[f"{kind}/before"] = r.before_denoise
        values[f"{kind}/frames"] = torch.stack(r.frames)
    ref = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    for renoise in ("level", "step"):
        g = torch.Generator().manual_seed(3)
        x0 = torch.rand(ref.shape, generator=g)
        mask = make_mask("right_half", (1, 8, 8))
        r = annealed_langevin_inpaint(net, x0, ref, mask, sigmas, 2e-5, 3, renoise, True, g, progress=False)
        values[f"inpaint_{renoise}/samples"] = r.samples
        values[f"inpaint_{renoise}/before"] = r.before_denoise
    return values


if __name__ == "__main__":
    for out, values in ((OUT, compute()), (SAMPLER_OUT, compute_sampler())):
        torch.save(values, out)
        print(f"wrote {out} ({out.stat().st_size} bytes)")
