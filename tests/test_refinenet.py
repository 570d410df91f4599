"""RefineNet score networks: NCSN (CondRefineNetDilated), NCSNv2, NCSNv2Deeper, and CIN++."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ncsn.core.sigmas import make_sigmas
from ncsn.nets.layers import ChainedResidualPooling, _mean_pool
from ncsn.nets.ncsnv2 import NCSNv2, NCSNv2Deeper
from ncsn.nets.normalization import ConditionalInstanceNorm2dPlus
from ncsn.nets.refinenet import CondRefineNetDilated


def _num_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _sigmas(num_scales: int) -> torch.Tensor:
    return make_sigmas("geometric", 1.0, 0.01, num_scales)


# Parameter counts of the reference implementations (ermongroup/ncsn, ermongroup/ncsnv2).
@pytest.mark.parametrize(
    "cls, in_channels, ngf, expected",
    [
        (CondRefineNetDilated, 1, 64, 7_638_657),
        (CondRefineNetDilated, 3, 128, 30_117_635),
        (NCSNv2, 3, 128, 29_694_083),
        (NCSNv2Deeper, 3, 128, 83_445_379),
    ],
)
def test_parameter_counts_match_reference(cls, in_channels, ngf, expected):
    torch.manual_seed(0)
    net = cls(_sigmas(10), in_channels=in_channels, ngf=ngf)
    assert _num_params(net) == expected
    assert "sigmas" in dict(net.named_buffers())
    assert net.sigmas.dtype == torch.float32 and net.sigmas.shape == (10,)


def test_ncsn_embeddings_grow_with_levels_but_ncsnv2_does_not():
    # CIN++ holds 3 values per channel and level: L=232 instead of 10 adds 9,633,024 parameters
    # (ngf 128, documented in conf/model/ncsn.yaml); NCSNv2 divides by sigma_i instead.
    assert _num_params(CondRefineNetDilated(_sigmas(232), 3, 128)) == 30_117_635 + 9_633_024
    assert _num_params(NCSNv2(_sigmas(232), 3, 8)) == _num_params(NCSNv2(_sigmas(10), 3, 8))


@pytest.mark.parametrize(
    "cls, shape",
    [
        (CondRefineNetDilated, (2, 1, 28, 28)),
        (CondRefineNetDilated, (2, 3, 32, 32)),
        (NCSNv2, (2, 1, 28, 28)),
        (NCSNv2, (2, 3, 32, 32)),
        (NCSNv2, (2, 3, 64, 64)),
        (NCSNv2Deeper, (2, 3, 64, 64)),
    ],
)
def test_output_shape(cls, shape):
    torch.manual_seed(0)
    net = cls(_sigmas(4), in_channels=shape[1], ngf=4)
    x = torch.rand(shape)
    out = net(x, torch.tensor([0, 3]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def _stage_sizes(net: nn.Module, x: torch.Tensor, level_index: torch.Tensor) -> list:
    sizes = []
    hooks = [
        stage[-1].register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[1:]))) for stage in net.body.stages
    ]
    net(x, level_index)
    for h in hooks:
        h.remove()
    return sizes


def test_resolution_stages():
    x, y = torch.rand(1, 3, 32, 32), torch.tensor([1])
    ngf = 4
    # One x2 downsampling, then dilation instead of downsampling.
    v1 = _stage_sizes(CondRefineNetDilated(_sigmas(2), 3, ngf), x, y)
    assert v1 == [(ngf, 32, 32), (2 * ngf, 16, 16), (2 * ngf, 16, 16), (2 * ngf, 16, 16)]
    v2 = _stage_sizes(NCSNv2(_sigmas(2), 3, ngf), x, y)
    assert v2 == v1
    deeper = _stage_sizes(NCSNv2Deeper(_sigmas(2), 3, ngf), torch.rand(1, 3, 64, 64), y)
    assert deeper == [(ngf, 64, 64), (2 * ngf, 32, 32), (2 * ngf, 16, 16), (4 * ngf, 16, 16), (4 * ngf, 16, 16)]


def test_mean_pool_is_mean_of_four_strided_subgrids():
    x = torch.randn(2, 3, 6, 8)
    expected = (x[:, :, ::2, ::2] + x[:, :, 1::2, ::2] + x[:, :, ::2, 1::2] + x[:, :, 1::2, 1::2]) / 4
    torch.testing.assert_close(_mean_pool(x), expected)


def test_pooling_kind_in_chained_residual_pooling():
    def pools(net):
        return {type(m.pool) for m in net.modules() if isinstance(m, ChainedResidualPooling)}

    assert pools(CondRefineNetDilated(_sigmas(2), 1, 4)) == {nn.AvgPool2d}
    assert pools(NCSNv2(_sigmas(2), 1, 4)) == {nn.MaxPool2d}
    assert pools(NCSNv2Deeper(_sigmas(2), 1, 4)) == {nn.MaxPool2d}


@pytest.mark.parametrize(
    "cls, shape",
    [
        (CondRefineNetDilated, (3, 1, 28, 28)),
        (NCSNv2, (3, 3, 32, 32)),
        (NCSNv2Deeper, (3, 3, 32, 32)),
    ],
)
def test_gradients_reach_every_parameter(cls, shape):
    torch.manual_seed(0)
    net = cls(_sigmas(3), in_channels=shape[1], ngf=4)
    x = torch.rand(shape)
    out = net(x, torch.tensor([0, 1, 2]))  # every level used, so every embedding row gets a gradient
    (out * torch.randn_like(out)).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        if p.grad.dim() == 2:  # embeddings: every row (level)
            assert (p.grad.abs().sum(dim=1) > 0).all(), name
        else:
            assert p.grad.abs().sum() > 0, name


def test_cin_plus_plus_depends_on_level():
    torch.manual_seed(0)
    norm = ConditionalInstanceNorm2dPlus(5, 4)
    x = torch.randn(1, 5, 6, 6).expand(4, -1, -1, -1)
    out = norm(x, torch.arange(4))
    for i in range(1, 4):
        assert not torch.allclose(out[0], out[i])
    # The same holds through the whole NCSN network.
    net = CondRefineNetDilated(_sigmas(4), 1, 4)
    with torch.no_grad():
        net.body.end_norm.norm.embed.weight.normal_(1.0, 0.5)
    xs = torch.rand(1, 1, 28, 28).expand(2, -1, -1, -1)
    out = net(xs, torch.tensor([0, 3]))
    assert not torch.allclose(out[0], out[1])


def test_cin_plus_plus_with_identity_parameters_standardizes():
    norm = ConditionalInstanceNorm2dPlus(4, 3)
    with torch.no_grad():
        norm.embed.weight[:, :4] = 1.0  # gamma
        norm.embed.weight[:, 4:] = 0.0  # alpha, beta
    x = 3.0 + 2.0 * torch.randn(5, 4, 8, 8) * torch.arange(1, 5).view(1, 4, 1, 1)
    out = norm(x, torch.tensor([0, 1, 2, 1, 0]))
    torch.testing.assert_close(out.mean(dim=(2, 3)), torch.zeros(5, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=(2, 3), unbiased=False), torch.ones(5, 4), atol=1e-3, rtol=0)


@pytest.mark.parametrize("cls, size", [(NCSNv2, 32), (NCSNv2Deeper, 32)])
def test_ncsnv2_output_is_unscaled_output_over_sigma(cls, size):
    torch.manual_seed(0)
    sigmas = make_sigmas("geometric", 50.0, 0.01, 5)
    net = cls(sigmas, in_channels=3, ngf=4)
    x = torch.rand(1, 3, size, size).expand(5, -1, -1, -1)
    levels = torch.arange(5)
    with torch.no_grad():
        out = net(x, levels)
        raw = net.unscaled(x)
    torch.testing.assert_close(out, raw / sigmas.float().view(-1, 1, 1, 1))
    # f(x) does not depend on the level: the body given each level index returns the same output
    # for the same image, and so does the whole network times sigma.
    with torch.no_grad():
        body = net.body(x, levels)
    for i in range(1, 5):
        torch.testing.assert_close(body[i], body[0])
        torch.testing.assert_close(out[i] * sigmas[i].float(), out[0] * sigmas[0].float())
    torch.testing.assert_close(body, raw)
    # The same check on NCSN v1's conditional body sees the level.
    v1 = CondRefineNetDilated(sigmas, in_channels=3, ngf=4)
    with torch.no_grad():
        v1.body.end_norm.norm.embed.weight.normal_(1.0, 0.5)
        cond = v1.body(x, levels)
    assert not torch.allclose(cond[4], cond[0])
