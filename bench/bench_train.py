"""Training throughput of the paper networks: one optimizer step = forward + backward + Adam update
of the annealed DSM loss (``ncsn.core.losses.dsm_loss``), plain baseline vs each speed option, side by
side in one process (method: bench/common.py). Prints one JSON line per option.

    python bench/bench_train.py --model ncsn --batch 8 --steps 3 --options fused_adam,nnpack
    python bench/bench_train.py --quick                       # smoke check, tiny net
    python bench/bench_train.py --device cuda --options bf16,channels_last,bf16+channels_last,fused_adam,compile
"""

from __future__ import annotations

import time

import common
import torch

from ncsn.core import speed
from ncsn.core.losses import dsm_loss


def make_step(fn, net, flags, sigmas, x, device, seed):
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, **speed.adam_kwargs(device, "fused_adam" in flags))
    gen = torch.Generator(device=device).manual_seed(seed)
    dtype = common.option_dtype(flags)
    last = {}

    def step():
        opt.zero_grad(set_to_none=True)
        with speed.autocast(device, dtype):
            out = dsm_loss(fn, x, sigmas, generator=gen)
        out.loss.backward()
        opt.step()
        if "first_loss" not in last:  # same init, data and seed in every option
            last["first_loss"] = float(out.loss.detach())

    return step, opt, last


def main():
    p = common.common_args(__doc__.splitlines()[0], "fused_adam,channels_last,nnpack,bf16")
    args = common.finish_args(p.parse_args(), gpu_batch=128, cpu_batch=8)
    device = torch.device(args.device)
    info = common.device_info(device)
    base, sigmas, _ = common.build_net(args.model, args.ngf, device, args.seed)
    flops_fwd = common.count_forward_flops(base, device)
    torch.manual_seed(args.seed + 1)
    x = torch.rand(args.batch, 3, 32, 32, device=device)

    runners, states, lasts = {}, {}, {}
    setup_s = {}
    for name in args.option_list:
        flags = common.parse_option(name)
        t0 = time.perf_counter()
        try:
            net, fn = common.prepare_net(base, flags, args.compile_mode)
        except RuntimeError as e:  # e.g. nnpack on a build without NNPACK
            common.emit({"bench": "train", "option": name, "skipped": str(e)})
            continue
        net.train()
        step, opt, last = make_step(fn, net, flags, sigmas, x, device, args.seed)
        for _ in range(max(args.warmup, 1) if "compile" in flags else args.warmup):  # compile outside timing
            step()
        common.sync(device)
        setup_s[name] = time.perf_counter() - t0
        runners[name], states[name], lasts[name] = step, (net, opt), last

    results = common.round_robin(runners, args.steps, args.budget_s, device)
    for name in runners:
        times, peaks = results[name]
        flags = common.parse_option(name)
        net, opt = states[name]
        extra = {
            "first_step_loss": round(lasts[name]["first_loss"], 5) if lasts[name] else None,
            "state_mib": round(common.state_mib(net, opt), 1),
            "setup_and_warmup_s": round(setup_s[name], 2),
            "gflop_per_image_fwd": round(flops_fwd / 1e9, 3),
            "flops_counted_as": "3x forward",
        }
        common.report(
            "train",
            args,
            info,
            name,
            flags,
            times,
            peaks,
            results["baseline"][0],
            args.batch,
            3 * flops_fwd * args.batch,
            extra,
        )


if __name__ == "__main__":
    main()
