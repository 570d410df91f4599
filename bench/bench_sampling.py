"""Sampling throughput of annealed Langevin dynamics (``ncsn.sampling.annealed_langevin``) with the
paper networks: network evaluations x images per second, plain baseline vs each speed option,
side by side in one process (method: bench/common.py). One timed iteration = one Langevin step
(one network evaluation on the whole batch) at the largest noise level; each option first makes one
untimed score call (compared with the baseline), on top of --warmup. Prints one JSON line per
option, with the option's relative error of the score against the fp32 baseline on the same input.

    python bench/bench_sampling.py --model ncsn --batch 100 --steps 2 --options nnpack
    python bench/bench_sampling.py --quick
    python bench/bench_sampling.py --device cuda --options bf16,channels_last,bf16+channels_last,\
        cuda_graph,bf16+cuda_graph
"""

from __future__ import annotations

import time

import common
import torch

from ncsn.core import speed
from ncsn.sampling import annealed_langevin


def make_score(fn, flags, x, labels):
    score = speed.score_autocast(fn, common.option_dtype(flags))
    if "cuda_graph" in flags:
        score = speed.cuda_graph_score(score, x, labels)
    return score


def main():
    p = common.common_args(__doc__.splitlines()[0], "nnpack,channels_last,bf16")
    args = common.finish_args(p.parse_args(), gpu_batch=100, cpu_batch=100)
    device = torch.device(args.device)
    info = common.device_info(device)
    base, sigmas, spec = common.build_net(args.model, args.ngf, device, args.seed)
    flops_fwd = common.count_forward_flops(base, device)
    torch.manual_seed(args.seed + 1)
    x0 = torch.rand(args.batch, 3, 32, 32, device=device)
    labels = torch.zeros(args.batch, dtype=torch.long, device=device)
    one_level = sigmas[:1]

    runners, setup_s, errors, reference = {}, {}, {}, None
    for name in args.option_list:
        flags = common.parse_option(name)
        t0 = time.perf_counter()
        net, fn = common.prepare_net(base, flags, args.compile_mode)
        net.eval()
        try:
            score = make_score(fn, flags, x0, labels)
        except RuntimeError as e:  # e.g. cuda_graph on a CPU
            common.emit({"bench": "sampling", "option": name, "skipped": str(e)})
            continue
        with torch.no_grad():
            out = score(x0, labels).float()
        if reference is None:
            reference = out
        errors[name] = float((out - reference).norm() / reference.norm())
        for _ in range(args.warmup):
            annealed_langevin(score, x0, one_level, spec["step_lr"], 1, progress=False)
        common.sync(device)
        setup_s[name] = time.perf_counter() - t0
        gen = torch.Generator(device=device).manual_seed(args.seed)

        def run(score=score, gen=gen):
            annealed_langevin(score, x0, one_level, spec["step_lr"], 1, generator=gen, progress=False)

        runners[name] = run

    results = common.round_robin(runners, args.steps, args.budget_s, device)
    for name in runners:
        times, peaks = results[name]
        extra = {
            "score_rel_err_vs_fp32": round(errors[name], 6),
            "setup_and_warmup_s": round(setup_s[name], 2),
            "gflop_per_image_fwd": round(flops_fwd / 1e9, 3),
            "flops_counted_as": "1x forward per evaluation",
        }
        common.report(
            "sampling",
            args,
            info,
            name,
            common.parse_option(name),
            times,
            peaks,
            results["baseline"][0],
            args.batch,
            flops_fwd * args.batch,
            extra,
            rate_key="evals_x_images_per_s",
        )


if __name__ == "__main__":
    main()
