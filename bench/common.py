"""Shared pieces of the benchmarks: networks of the paper configurations, options, device facts,
peak memory, FLOP counting, JSON output.

Measurement method (both benchmarks):
* Every option gets its own copy of the same initial network (and optimizer), the same data and
  the same random seed. After ``--warmup`` untimed iterations per option, the options are timed
  *round-robin* (one iteration of each option per round, ``--steps`` rounds), so load from other
  processes on a shared machine hits all options alike. ``ratio_to_baseline`` is the median over
  rounds of (baseline time / option time) within the same round, robust to load that changes
  between rounds; ``ratio_best`` compares the fastest iteration of each (best-of-N: contention
  only adds time); ``images_per_s`` uses the mean iteration time.
  An option whose timed iterations exceed ``--budget-s`` stops early (at least one is timed).
* Peak memory of one iteration, as a transient above what was allocated before it:
  CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
  ``memory_allocated()`` before the iteration. CPU: the process's peak resident set (VmHWM of
  /proc/self/status, reset before the iteration by writing 5 to /proc/self/clear_refs), minus the
  resident set (VmRSS) before it; no tracemalloc (it does not see torch's allocations). If the
  reset is not permitted, the CPU number is reported as null. On the CPU, memory is measured in a
  separate pass after the timing (one more iteration per option), each iteration preceded by glibc's
  ``malloc_trim(0)`` so that heap memory kept from earlier iterations is faulted in again and
  cannot hide a peak (trimming would disturb the timing, so the timed iterations do not trim). On CUDA it is measured
  during the timed iterations. ``state_mib``: the option's
  parameters + optimizer state, which persist between iterations.
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on one forward of one image (convolutions and
  matrix products; elementwise ops and norms are not counted). A training step counts 3x forward
  (forward + backward ~ 2x forward); a sampler step counts 1x forward. FLOP utilization =
  achieved FLOP/s / the device's peak: ``--peak-tflops`` or the table below (GPUs), otherwise
  "unknown".
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch


def malloc_trim() -> bool:
    """glibc ``malloc_trim(0)``: give the free pages that malloc keeps back to the OS, so memory reused
    by the next iteration is faulted in again and shows in its peak resident set."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout

from ncsn.core import speed  # noqa: E402
from ncsn.core.sigmas import make_sigmas  # noqa: E402
from ncsn.nets.ncsnv2 import NCSNv2  # noqa: E402
from ncsn.nets.refinenet import CondRefineNetDilated  # noqa: E402

# The paper's CIFAR-10 configurations (conf/experiment/ncsn_cifar10.yaml, ncsnv2_cifar10.yaml).
MODELS = {
    "ncsn": {"cls": CondRefineNetDilated, "sigma_begin": 1.0, "sigma_end": 0.01, "num_scales": 10, "step_lr": 2e-5},
    "ncsnv2": {"cls": NCSNv2, "sigma_begin": 50.0, "sigma_end": 0.01, "num_scales": 232, "step_lr": 6.2e-6},
}

# Dense peak TFLOP/s (vendor data sheets, no sparsity). "fp32" is what fp32 convolutions run at by
# default on these GPUs: cuDNN uses TF32 for convolutions (torch.backends.cudnn.allow_tf32=True).
PEAK_TFLOPS = {
    "H100 PCIe": {"bf16": 756.0, "fp32": 378.0},
    "H100": {"bf16": 989.0, "fp32": 494.0},  # SXM
    "H200": {"bf16": 989.0, "fp32": 494.0},
    "A100": {"bf16": 312.0, "fp32": 156.0},
}

# Option names: join several with "+" (e.g. bf16+channels_last). "baseline" = eager fp32, no options.
OPTIONS = ("baseline", "bf16", "fp16", "channels_last", "compile", "fused_adam", "nnpack", "cuda_graph")


def parse_option(name: str) -> set:
    parts = set(name.split("+"))
    bad = parts - set(OPTIONS)
    if bad:
        raise SystemExit(f"unknown option(s) {sorted(bad)}; choose from {OPTIONS} (join with '+')")
    return parts - {"baseline"}


def option_dtype(flags: set):
    return torch.bfloat16 if "bf16" in flags else torch.float16 if "fp16" in flags else None


def common_args(description: str, default_options: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", choices=sorted(MODELS), default="ncsn")
    p.add_argument("--ngf", type=int, default=128)
    p.add_argument("--batch", type=int, default=None, help="default: 128 (train) / 100 (sampling) on GPU, small on CPU")
    p.add_argument("--steps", type=int, default=3, help="timed rounds (one iteration per option per round)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per option first")
    p.add_argument(
        "--options",
        default=default_options,
        help=f"comma-separated, each one of {OPTIONS} or a '+' combination; baseline is always added",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for the compile option")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak TFLOP/s for the FLOP utilization (default: table for known GPUs)",
    )
    p.add_argument("--budget-s", type=float, default=120.0, help="stop timing an option after this many seconds")
    p.add_argument("--quick", action="store_true", help="smoke check: ngf 8, batch 4, 1 step, no warm-up")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's choice); 1 gives steadier ratios on a busy machine",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def finish_args(args, gpu_batch: int, cpu_batch: int):
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.ngf, args.batch, args.steps, args.warmup = 8, args.batch or 4, 1, 0
    if args.batch is None:
        args.batch = gpu_batch if torch.device(args.device).type == "cuda" else cpu_batch
    opts = [o.strip() for o in args.options.split(",") if o.strip()]
    args.option_list = ["baseline"] + [o for o in opts if o != "baseline"]
    for o in args.option_list:
        parse_option(o)
    return args


def build_net(model: str, ngf: int, device, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    spec = MODELS[model]
    sigmas = make_sigmas("geometric", spec["sigma_begin"], spec["sigma_end"], spec["num_scales"])
    torch.manual_seed(seed)
    net = spec["cls"](sigmas, in_channels=3, ngf=ngf).to(device)
    return net, net.sigmas, spec


def prepare_net(base: torch.nn.Module, flags: set, compile_mode=None):
    """A copy of ``base`` with the option's module transforms; returns (module, callable)."""
    net = copy.deepcopy(base)
    if "channels_last" in flags:
        speed.to_channels_last(net)
    if "nnpack" in flags:
        speed.nnpack_convs(net)
    fn = speed.maybe_compile(net, "compile" in flags, compile_mode)
    return net, fn


def count_forward_flops(net, device) -> int:
    """FLOPs of one forward pass of one 3x32x32 image (FlopCounterMode: convs and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, 32, 32, device=device)
    labels = torch.zeros(1, dtype=torch.long, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, labels)
    return int(counter.get_total_flops())


def device_info(device) -> dict:
    dev = torch.device(device)
    info = {"device": dev.type, "torch": torch.__version__, "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
    else:
        name, flags = platform.processor(), ""
        try:
            text = Path("/proc/cpuinfo").read_text()
            name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), name)
            flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        except OSError:
            pass
        info["device_name"] = name
        info["cpu_isa"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in flags]
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["loadavg_1min"] = os.getloadavg()[0]
    return info


def peak_tflops(device_name: str, dtype_key: str, given: float | None):
    if given is not None:
        return given
    for key, peaks in PEAK_TFLOPS.items():  # "H100 PCIe" before "H100"
        if key in device_name:
            return peaks[dtype_key]
    return None


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_kib(key: str):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


@contextmanager
def peak_memory(device, result: dict):
    """Sets ``result['peak_mib']``: the peak memory of the block above what was in use before it."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        before = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        yield
        torch.cuda.synchronize(dev)
        result["peak_mib"] = (torch.cuda.max_memory_allocated(dev) - before) / 2**20
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _proc_status_kib("VmRSS")
    except OSError:
        before = None
    yield
    hwm = _proc_status_kib("VmHWM") if before is not None else None
    result["peak_mib"] = None if hwm is None else (hwm - before) / 1024


def state_mib(net, optimizer=None) -> float:
    n = sum(p.numel() * p.element_size() for p in net.parameters())
    if optimizer is not None:
        for st in optimizer.state.values():
            n += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v) and v.dim() > 0)
    return n / 2**20


def round_robin(runners: dict, steps: int, budget_s: float, device) -> dict:
    """Time ``runners[name]()`` round-robin; returns {name: (list of seconds, list of peak MiB)}."""
    cuda = torch.device(device).type == "cuda"
    times = {k: [] for k in runners}
    peaks = {k: [] for k in runners}
    for _ in range(steps):
        for name, fn in runners.items():
            if times[name] and sum(times[name]) > budget_s:
                continue
            res = {}
            with peak_memory(device, res) if cuda else contextlib.nullcontext():
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - t0)
            peaks[name].append(res.get("peak_mib"))
    if not cuda:  # the CPU memory pass, after the timing (see the module docstring)
        for name, fn in runners.items():
            res = {}
            trimmed = malloc_trim()
            with peak_memory(device, res):
                fn()
            peaks[name] = [res["peak_mib"] if trimmed else None]
    return {k: (times[k], peaks[k]) for k in runners}


def emit(record: dict):
    print(json.dumps(record, sort_keys=False), flush=True)


def report(
    kind: str,
    args,
    info: dict,
    name: str,
    flags: set,
    times: list,
    peaks: list,
    base_times: list | None,
    images_per_call: int,
    flops_per_call: float,
    extra: dict,
    rate_key: str = "images_per_s",
) -> None:
    rate = images_per_call * len(times) / sum(times)
    base_times = base_times or times
    per_round = sorted(b / t for b, t in zip(base_times, times))
    mid = len(per_round) // 2
    ratio = per_round[mid] if len(per_round) % 2 else (per_round[mid - 1] + per_round[mid]) / 2
    achieved = flops_per_call * len(times) / sum(times) / 1e12
    dtype_key = "bf16" if option_dtype(flags) is not None else "fp32"
    peak = (
        peak_tflops(info.get("device_name", ""), dtype_key, args.peak_tflops)
        if info["device"] == "cuda" or args.peak_tflops is not None
        else None
    )
    valid_peaks = [p for p in peaks if p is not None]
    record = {
        "bench": kind,
        "model": args.model,
        "ngf": args.ngf,
        "batch": args.batch,
        "option": name,
        rate_key: round(rate, 4),
        "ratio_to_baseline": round(ratio, 3),
        "ratio_best": round(min(base_times) / min(times), 3),
        "ratio_mean": round(sum(base_times) / sum(times), 3),
        "sec_per_iter": round(sum(times) / len(times), 4),
        "sec_per_iter_best": round(min(times), 4),
        "timed_iters": len(times),
        "peak_mib": round(max(valid_peaks), 1) if valid_peaks else None,
        "achieved_tflops": round(achieved, 4),
        "peak_tflops": peak if peak is not None else "unknown",
        "flop_utilization": round(achieved / peak, 4) if peak else "unknown",
        **extra,
        **info,
    }
    emit(record)
