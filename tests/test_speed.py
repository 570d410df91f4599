"""Speed options (ncsn.core.speed) agree with the plain paths, within the tolerances stated here.

Tiny RefineNets (ngf 8, 16x16 images) on the CPU; the CUDA test runs only with a GPU.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from ncsn.core import speed
from ncsn.core.losses import dsm_loss
from ncsn.core.sigmas import make_sigmas
from ncsn.nets.ncsnv2 import NCSNv2
from ncsn.nets.refinenet import CondRefineNetDilated
from ncsn.sampling import Annealed, Sampler
from ncsn.training.optimizer import Adam

# Stated tolerances (relative, ||a - b|| / ||b||), a few times the error measured on the CPU
# (AMD EPYC Zen 3) with these nets and batches over seeds 0-2 (the tests use seed 0); each bf16
# tolerance rejects a bf16 path that scales the score by 0.8 (test_bf16_tolerances_reject_a_wrong_path).
BF16_LOSS_RTOL = 2e-3  # DSM loss value under bf16 autocast vs fp32 (measured 2.4e-4 to 8.7e-4; x0.8: 1.6e-2)
BF16_GRAD_RTOL = 0.12  # flattened gradient, bf16 autocast vs fp32 (measured 1.8e-2 to 5.4e-2; x0.8: 0.28)
BF16_SCORE_RTOL = 0.1  # network output, bf16 autocast vs fp32 (measured 1.1e-2 to 3.7e-2; x0.8: 0.2)
BF16_SAMPLE_RTOL = 1.5e-2  # samples after a short annealed Langevin run (measured 2.2e-3 to 7.4e-3; x0.8: 3.5e-2)
LAYOUT_RTOL = 1e-5  # channels_last vs contiguous output
NNPACK_RTOL = 1e-4  # NNPACK (Winograd) vs oneDNN output


def _net(cls=CondRefineNetDilated, num_scales=4, ngf=8, seed=0):
    torch.manual_seed(seed)
    return cls(make_sigmas("geometric", 1.0, 0.01, num_scales), in_channels=3, ngf=ngf)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _batch(n=4, size=16, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _loss_and_grad(net, x, dtype):
    net.zero_grad(set_to_none=True)
    with speed.autocast("cpu", dtype):
        out = dsm_loss(net, x, net.sigmas, generator=torch.Generator().manual_seed(3))
    out.loss.backward()
    grad = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    return out, grad


def _bf16_training_errors(net, x) -> tuple[float, float]:
    """(relative error of the DSM loss, relative L2 error of the gradient), bf16 autocast vs fp32."""
    ref, g_ref = _loss_and_grad(net, x, None)
    out, g = _loss_and_grad(net, x, "bf16")
    assert out.loss.dtype == torch.float32
    assert torch.equal(out.level_index, ref.level_index)  # same seed, same levels and noise
    return abs(out.loss.item() - ref.loss.item()) / abs(ref.loss.item()), _rel(g, g_ref)


def _bf16_sampler_error(net) -> float:
    """Relative error of the samples of a short annealed Langevin run with the bf16 score."""
    sampler = Sampler(Annealed(2e-5, 2), n_samples=4, batch_size=4, denoise=True)
    ref = sampler.draw(net, net.sigmas, (3, 16, 16), torch.Generator().manual_seed(0), progress=False)
    out = sampler.draw(
        speed.score_autocast(net, "bf16"), net.sigmas, (3, 16, 16), torch.Generator().manual_seed(0), progress=False
    )
    assert out.samples.dtype == torch.float32
    return max(_rel(out.samples, ref.samples), _rel(out.before_denoise, ref.before_denoise))


class _WrongUnderAutocast(nn.Module):
    """A net whose bf16 path is wrong: its output times ``factor`` under CPU autocast."""

    def __init__(self, net: nn.Module, factor: float):
        super().__init__()
        self.net, self.factor, self.sigmas = net, factor, net.sigmas

    def forward(self, x, level_index):
        out = self.net(x, level_index)
        return out * self.factor if torch.is_autocast_enabled("cpu") else out


@pytest.mark.parametrize("cls", [CondRefineNetDilated, NCSNv2])
def test_dsm_loss_bf16_autocast_matches_fp32(cls):
    loss_err, grad_err = _bf16_training_errors(_net(cls), _batch())
    assert loss_err <= BF16_LOSS_RTOL
    assert grad_err <= BF16_GRAD_RTOL


@pytest.mark.parametrize("factor", [0.8, 0.0])
def test_bf16_tolerances_reject_a_wrong_path(factor):
    """The tolerances above can fail: a bf16 path scaling the score by 0.8 (or zeroing it) breaks
    the training check and the sampler check."""
    loss_err, grad_err = _bf16_training_errors(_WrongUnderAutocast(_net(), factor), _batch())
    assert loss_err > BF16_LOSS_RTOL or grad_err > BF16_GRAD_RTOL
    assert grad_err > BF16_GRAD_RTOL
    assert _bf16_sampler_error(_WrongUnderAutocast(_net().eval(), factor)) > BF16_SAMPLE_RTOL


def test_autocast_none_is_a_no_op():
    with speed.autocast("cpu", None):
        assert not torch.is_autocast_enabled("cpu")
    with speed.autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("cls", [CondRefineNetDilated, NCSNv2])
def test_channels_last_output_equals_contiguous(cls):
    net = _net(cls).eval()
    fast = speed.to_channels_last(copy.deepcopy(net))
    assert fast.body.begin_conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, labels = _batch(), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        ref, out = net(x, labels), fast(x, labels)
    assert _rel(out, ref) <= LAYOUT_RTOL
    assert fast.state_dict().keys() == net.state_dict().keys()


def test_score_autocast_none_is_identity_and_exact():
    net = _net().eval()
    assert speed.score_autocast(net, None) is net
    assert speed.score_autocast(net, "fp32") is net

    def plain(x, level_index):  # the network called directly, not through Sampler.wrap's autocast
        return net(x, level_index)

    kw = dict(n_samples=3, batch_size=3)
    ref = Sampler(Annealed(2e-5, 2), **kw).draw(
        plain, net.sigmas, (3, 16, 16), torch.Generator().manual_seed(0), progress=False
    )
    for autocast in (None, "fp32"):  # sampler.autocast null / fp32: exactly the fp32 samples
        out = Sampler(Annealed(2e-5, 2), **kw, autocast=autocast).draw(
            net, net.sigmas, (3, 16, 16), torch.Generator().manual_seed(0), progress=False
        )
        assert torch.equal(out.samples, ref.samples), autocast
    bf16 = Sampler(Annealed(2e-5, 2), **kw, autocast="bf16").draw(
        net, net.sigmas, (3, 16, 16), torch.Generator().manual_seed(0), progress=False
    )
    assert not torch.equal(bf16.samples, ref.samples)  # the comparison sees a change of path


def test_sampler_with_bf16_score_close_to_fp32():
    net = _net().eval()
    score = speed.score_autocast(net, "bf16")
    x, labels = _batch(), torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        s = score(x, labels)
    assert s.dtype == torch.float32 and s.shape == x.shape
    with torch.no_grad():
        assert _rel(s, net(x, labels)) <= BF16_SCORE_RTOL
    assert _bf16_sampler_error(net) <= BF16_SAMPLE_RTOL


def test_resolve_dtype():
    assert speed.resolve_dtype(None) is None and speed.resolve_dtype("fp32") is None
    assert speed.resolve_dtype("bf16") is torch.bfloat16 and speed.resolve_dtype("fp16") is torch.float16
    assert speed.resolve_dtype(torch.bfloat16) is torch.bfloat16
    for bad in ("int8", torch.float64, 3):
        with pytest.raises(ValueError):
            speed.resolve_dtype(bad)


def test_adam_kwargs_selection_and_fused_step_on_cpu():
    assert speed.adam_kwargs("cpu", "auto") == {}
    assert speed.adam_kwargs("cpu", False) == {}
    assert speed.adam_kwargs("cpu", True) == {"fused": True}
    assert speed.adam_kwargs("cuda", "auto") == {"fused": True}
    assert speed.adam_kwargs(torch.device("cuda", 0), False) == {}
    with pytest.raises(ValueError, match="optim.fused='yes' is invalid"):  # the one check: the optimizer's
        Adam(lr=1e-3, fused="yes")
    with pytest.raises(ValueError, match="not available"):
        speed.adam_kwargs("meta", True)
    # The fused kernel is a valid Adam on CPU and performs the same update (up to rounding).
    nets = [_net(), _net()]
    x = _batch()
    for net, fused in zip(nets, (False, True)):
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, **speed.adam_kwargs("cpu", fused))
        for _ in range(2):
            opt.zero_grad()
            dsm_loss(net, x, net.sigmas, generator=torch.Generator().manual_seed(3)).loss.backward()
            opt.step()
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_maybe_compile_disabled_returns_the_argument():
    net = _net()
    assert speed.maybe_compile(net, False) is net
    assert speed.maybe_compile(net, enabled=False, mode="max-autotune") is net


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_graph_score_raises_clearly_without_cuda():
    net = _net().eval()
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        speed.cuda_graph_score(net, _batch(), torch.zeros(4, dtype=torch.long))


def test_cuda_graph_score_rejects_cpu_tensors():
    net = _net().eval()
    with pytest.raises(RuntimeError, match="CUDA"):
        speed.cuda_graph_score(net, _batch(), torch.zeros(4, dtype=torch.long))


@pytest.mark.skipif(not torch._nnpack_available(), reason="torch built without NNPACK")
def test_nnpack_convs_match_and_train():
    net = _net().eval()
    fast = speed.nnpack_convs(copy.deepcopy(net))
    assert any(isinstance(m, speed.NNPACKConv2d) for m in fast.modules())
    assert fast.state_dict().keys() == net.state_dict().keys()
    x, labels = _batch(), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        assert _rel(fast(x, labels), net(x, labels)) <= NNPACK_RTOL
        with torch.autocast("cpu", torch.bfloat16):  # falls back to the usual conv under autocast
            assert fast(x, labels).shape == x.shape
    fast.train()
    dsm_loss(fast, x, fast.sigmas).loss.backward()
    assert all(p.grad is not None for p in fast.parameters() if p.requires_grad)
    assert speed.nnpack_convs(net, enabled=False) is net


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_paths_match_eager():
    net = _net().cuda().eval()
    x, labels = _batch().cuda(), torch.tensor([0, 1, 2, 3], device="cuda")
    with torch.no_grad():
        ref = net(x, labels)
        graphed = speed.cuda_graph_score(net, x, labels)
        torch.testing.assert_close(graphed(x, labels), ref, rtol=1e-4, atol=1e-5)
        x2 = torch.rand_like(x)
        torch.testing.assert_close(graphed(x2, labels), net(x2, labels), rtol=1e-4, atol=1e-5)
        assert graphed(x[:2], labels[:2]).shape == (2, 3, 16, 16)  # other shapes run eagerly
        bf16 = speed.score_autocast(net, "bf16")(x, labels)
        assert bf16.dtype == torch.float32 and _rel(bf16, ref) <= BF16_SCORE_RTOL
        graphed_bf16 = speed.cuda_graph_score(speed.score_autocast(net, "bf16"), x, labels)
        assert _rel(graphed_bf16(x, labels), ref) <= BF16_SCORE_RTOL
    opt = torch.optim.Adam(net.parameters(), **speed.adam_kwargs("cuda", "auto"))
    net.train()
    with speed.autocast("cuda", "bf16"):
        loss = dsm_loss(net, x, net.sigmas).loss
    loss.backward()
    opt.step()
    fast = speed.to_channels_last(copy.deepcopy(net).eval())
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # else the two layouts pick TF32 kernels that differ by ~1e-3
    try:
        with torch.no_grad():
            torch.testing.assert_close(fast(x, labels), net.eval()(x, labels), rtol=1e-4, atol=1e-4)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def _train_toy(run_dir, compile_net: bool) -> dict:
    """train.py's workflow in this process: the toy MLP for 4 steps, speed.compile as given."""
    from hydra import compose, initialize_config_dir

    from ncsn.workflow.entry import EXIT_OK, run_entry
    from ncsn.workflow.train import train

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=toy_gmm",
                f"speed.compile={str(compile_net).lower()}",
                "trainer.max_steps=4",
                "data.n_train=1024",
                "data.n_val=128",
                "sampler.n_samples=16",
                "sampler.n_steps_each=1",
                "callbacks.samples=null",
                "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false",
                "logger=csv",
                f"paths.run_dir={run_dir}",
            ],
        )
    assert run_entry(train, cfg) == EXIT_OK
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


@pytest.mark.slow  # compiles the forward and backward (minutes on a busy 2-core CPU)
def test_training_with_speed_compile_runs_the_compiled_net_and_matches_eager(tmp_path):
    """speed.compile=true: training_step calls the torch.compile'd network (dynamo captures
    frames) and the 4 Adam steps land where the eager ones do; the checkpoint keys are the same."""
    from torch._dynamo.utils import counters

    eager = _train_toy(tmp_path / "eager", False)
    torch._dynamo.reset()
    counters.clear()
    compiled = _train_toy(tmp_path / "compiled", True)
    assert counters["frames"]["ok"] > 0  # the compiled network ran
    assert compiled.keys() == eager.keys()
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=1e-5, msg=k)
