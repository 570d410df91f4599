"""Plain-torch speed options, each off (or numerically neutral) by default.

Every function here is small, stateless and imports nothing of Lightning or Hydra, so the
LightningModule, the sampler callers and the benchmarks (``bench/``) share them:

* ``to_channels_last(net)``            NHWC weights (helps GPUs with tensor cores; slower on this CPU)
* ``maybe_compile(fn, enabled, mode)``  ``torch.compile`` behind a flag
* ``autocast(device, dtype)``           an autocast context, a no-op for ``dtype=None``
* ``score_autocast(score_fn, dtype)``   a score function that runs under autocast, returns float32
* ``adam_kwargs(device, fused)``        ``fused``/``foreach`` keyword arguments for ``torch.optim.Adam``
* ``cuda_graph_score(net, x, level_index)``  a CUDA-graph replay of a fixed-shape score call (GPU only)
* ``nnpack_convs(net)``                 NNPACK (Winograd) for the 3x3 convs on CPU, fp32 (CPU only gain)

Measured effects and tolerances: ``docs/performance.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}
# Devices with a fused Adam kernel (torch >= 2.4 has one for CPU as well).
_FUSED_ADAM_DEVICES = ("cuda", "cpu", "mps", "xpu", "hpu")


def resolve_dtype(dtype) -> torch.dtype | None:
    """``None``/``"none"``/``"fp32"`` -> None (no autocast); ``"bf16"``/``"fp16"`` or a torch dtype
    -> that reduced-precision dtype. Lets config files name the dtype as a string."""
    if dtype is None or (isinstance(dtype, str) and dtype.lower() in ("none", "fp32", "float32", "32", "")):
        return None
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"autocast dtype {dtype} must be torch.bfloat16 or torch.float16 (or None)")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"autocast dtype {dtype!r} is not one of None, 'fp32', 'bf16', 'fp16'")


def _device_type(device) -> str:
    return torch.device(device).type if not isinstance(device, torch.device) else device.type


def to_channels_last(net: nn.Module) -> nn.Module:
    """Convert ``net``'s 4-D parameters and buffers to channels_last (NHWC), in place; returns it.

    Outputs equal the contiguous network's up to float rounding (different conv kernels).
    Inputs need no conversion: the first conv propagates the layout. Worth it on GPUs (tensor
    cores prefer NHWC); on the 2-core AVX2 CPU of this project it was slower (see the docs).
    """
    return net.to(memory_format=torch.channels_last)


def maybe_compile(fn_or_module, enabled: bool = False, mode: str | None = None, **kwargs):
    """``torch.compile(fn_or_module, mode=mode, **kwargs)`` if ``enabled``, else the argument itself.

    ``mode``: None (default), "reduce-overhead" (CUDA graphs), "max-autotune". Compiling the
    NCSN CIFAR-10 net takes minutes on a CPU (~280 s on a 2-core CPU, no faster after), so it stays off by default.
    Compiling a module returns a wrapper that shares the parameters: keep the original module for
    ``state_dict``/EMA and call the compiled one in the hot loop.
    """
    if not enabled:
        return fn_or_module
    return torch.compile(fn_or_module, mode=mode, **kwargs)


def autocast(device, dtype=None):
    """``torch.autocast(device_type, dtype)``, or a no-op context when ``dtype`` resolves to None.

    For training inside Lightning prefer ``Trainer(precision="bf16-mixed")``, which does the same.
    """
    dtype = resolve_dtype(dtype)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device_type(device), dtype=dtype)


def score_autocast(score_fn: ScoreFn, dtype=None) -> ScoreFn:
    """A score function that evaluates ``score_fn`` under autocast(``dtype``) on the input's device
    and returns the score in the input's dtype (float32 for the samplers).

    ``dtype=None`` (or "fp32") returns ``score_fn`` itself, so results are bit-identical to the
    plain path. Use for the sampler's network calls: ``annealed_langevin(score_autocast(net,
    "bf16"), ...)``. The Langevin update itself stays in float32.
    """
    dtype = resolve_dtype(dtype)
    if dtype is None:
        return score_fn

    def score(x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=dtype):
            out = score_fn(x, level_index)
        return out.to(x.dtype)

    score.__wrapped__ = score_fn  # type: ignore[attr-defined]
    return score


def adam_kwargs(device, fused: bool | str = "auto") -> dict:
    """Keyword arguments selecting the Adam implementation: ``torch.optim.Adam(params, lr=...,
    **adam_kwargs(device, fused))``.

    ``fused=True``: the single-kernel fused Adam (raises if ``device`` has none);
    ``fused=False``: ``{}``, torch's default (foreach on CUDA, a per-parameter loop on CPU);
    ``fused="auto"``: fused on CUDA (the fastest there), the default elsewhere (on this CPU the
    optimizer step is <1 % of a training step, so the choice does not matter; see the docs).
    The update is the same algorithm; results agree up to float rounding. ``fused`` is one of
    these three (``training.optimizer.Adam`` refuses any other value when it is made).
    """
    kind = _device_type(device)
    if fused is True:
        if kind not in _FUSED_ADAM_DEVICES:
            raise ValueError(f"fused Adam is not available on device {kind!r} (have: {_FUSED_ADAM_DEVICES})")
        return {"fused": True}
    return {"fused": True} if fused == "auto" and kind == "cuda" else {}


def cuda_graph_score(
    net: ScoreFn, example_x: torch.Tensor, example_level_index: torch.Tensor, warmup: int = 3
) -> ScoreFn:
    """Capture one inference call ``net(x, level_index)`` of fixed shape into a CUDA graph; return a
    score function that copies its inputs into the captured buffers and replays the graph.

    Saves the per-kernel launch overhead of eager PyTorch (large for small batches: the NCSN nets
    launch ~1,000 kernels per call). ``net`` may be any score function, e.g.
    ``score_autocast(net, "bf16")``. Calls whose shapes differ from the example (e.g. the last,
    smaller batch of a sampler) run ``net`` eagerly. The result is a fresh tensor (a clone of the
    graph's output buffer). Inference only (no autograd). Raises RuntimeError without CUDA.
    """
    if not torch.cuda.is_available() or not example_x.is_cuda:
        raise RuntimeError(
            "cuda_graph_score needs a CUDA device and CUDA example tensors "
            f"(cuda available: {torch.cuda.is_available()}, example on {example_x.device}); "
            "leave the CUDA-graph option off on CPU"
        )
    static_x = example_x.detach().clone()
    static_level_index = example_level_index.detach().clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):  # warm-up (cuDNN autotuning, allocations)
        for _ in range(warmup):
            net(static_x, static_level_index)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = net(static_x, static_level_index)

    def score(x: torch.Tensor, level_index: torch.Tensor) -> torch.Tensor:
        if x.shape != static_x.shape or level_index.shape != static_level_index.shape or x.device != static_x.device:
            with torch.no_grad():
                return net(x, level_index)
        static_x.copy_(x)
        static_level_index.copy_(level_index)
        graph.replay()
        return static_out.clone()

    score.graph = graph  # type: ignore[attr-defined]
    return score


class NNPACKConv2d(nn.Conv2d):
    """A ``Conv2d`` that runs through NNPACK on CPU for float32 inputs outside autocast, and as a plain
    ``Conv2d`` otherwise (GPU, bf16/fp16, autocast). Same parameters and state_dict keys."""

    def _conv_forward(self, input, weight, bias):
        if (
            input.device.type == "cpu"
            and input.dim() == 4
            and input.dtype == torch.float32
            and weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        ):
            return torch._nnpack_spatial_convolution(input, weight, bias, list(self.padding), list(self.stride))
        return super()._conv_forward(input, weight, bias)


def _nnpack_eligible(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.stride == (1, 1)
        and m.dilation == (1, 1)
        and m.groups == 1
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
        and max(m.kernel_size) > 1
        and max(m.kernel_size) <= 16
    )


def nnpack_convs(net: nn.Module, enabled: bool = True) -> nn.Module:
    """Route ``net``'s undilated, stride-1 kxk convs (k in 2..16) through NNPACK's Winograd/FFT
    kernels on CPU, in place (their class becomes ``NNPACKConv2d``); returns ``net``.

    CPU, float32 only: elsewhere the convs run as before. Outputs differ from oneDNN's by float
    rounding (relative error ~1e-5 on the NCSN nets); gradients use torch's usual conv backward.
    Dilated and 1x1 convs are left alone. Raises RuntimeError if this torch build lacks NNPACK.
    """
    if not enabled:
        return net
    if not torch._nnpack_available():  # also initializes NNPACK: required before the first call
        raise RuntimeError("this torch build has no NNPACK; leave the nnpack option off")
    for m in net.modules():
        if _nnpack_eligible(m):
            m.__class__ = NNPACKConv2d
    return net
