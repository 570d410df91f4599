"""One prepared GPU check: ``pytest -m gpu``, the NCSNv2 CIFAR-10 training step in the real Lightning
loop (eager fp32, bf16-mixed, bf16-mixed + torch.compile) and the sampling throughput of every
sampler kind, with the wall time an FID-50k evaluation would spend sampling.

    python bench/device_check.py --out device_check.json           # one H100: ends within 8 minutes
    python bench/device_check.py --quick --out /tmp/dc.json         # CPU smoke run: tiny width, batch, steps

Every phase runs in a child process (this script with ``--phase``) under a hard timeout taken from
what is left of ``--budget-s`` (a child still running then is killed with its process group and
its phase is reported as timed out); inside a phase, timing loops also stop at a soft budget.
Phases, in order (the riskiest last):

* ``pytest``: ``pytest -m gpu`` on the test files that mark GPU tests (skipped without CUDA).
* ``sample``: experiment=ncsnv2_cifar10's network (random weights) and, for each kind, the
  sampler sample.py gives with ``sampler=<kind>`` (conf/sampler/<kind>.yaml: NFE per
  sample from its settings on the 232 levels). Each kind is timed on the last ``--sample-levels``
  levels (the smallest sigmas: step sizes as in the full run), one batch of ``--sample-batch``
  after one untimed network call, as seconds per network evaluation; images/s = batch / (s/eval x
  NFE) and ``fid50k_s`` = 50,000 / images/s (sampling only, not the feature extraction).
* ``train``: train.py's own objects (``workflow.train.prepare_run`` / ``build_trainer``: the
  ScoreModel with its EMA, the CIFAR-10 data module on a synthetic data set in the real format)
  and ``Trainer.fit`` with ``trainer.precision`` and ``speed.compile`` set per variant; a callback
  times each loop iteration (cuda-synchronized start of one batch to the next) after ``--warmup``
  iterations (the first one, with compilation, is reported as ``first_step_s``). No validation,
  checkpoints, samples or loggers. ``--quick`` skips the compile variant (minutes on a CPU).

Prints the device, the tables and writes every number to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common  # puts src/ on sys.path
import torch

REPO = Path(__file__).resolve().parents[1]
KIND_ORDER = ("annealed", "langevin", "cas", "pc", "ode", "euler", "edm")
VARIANTS = {"eager fp32": ("32-true", False), "bf16-mixed": ("bf16-mixed", False), "bf16+compile": ("bf16-mixed", True)}
FID_N = 50_000
PHASE_SHARE = {"pytest": 0.25, "sample": 0.2}  # of --budget-s at most; train gets what is left


def compose_cfg(args, run_dir: Path, *extra: str, data_dir: Path | None = None):
    """train.py's config for experiment=ncsnv2_cifar10 at this check's width and batch."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                "experiment=ncsnv2_cifar10",
                f"model.ngf={args.ngf}",
                f"data.batch_size={args.batch}",
                f"paths.run_dir={run_dir}",
                f"paths.data_dir={data_dir or run_dir / 'data'}",
                *extra,
            ],
        )


def emit(record: dict) -> None:
    print("RESULT " + json.dumps(record), flush=True)


# -- phase: sampling throughput per kind -----------------------------------------------------
def phase_sample(args) -> None:
    from ncsn.workflow.build import build_net, build_sampler, build_sigmas
    from ncsn.workflow.sample import sampler_cfg_for

    device = torch.device(args.device)
    cfg = compose_cfg(args, Path(tempfile.gettempdir()) / "device_check_sample")  # composed only: nothing is written
    sigmas = build_sigmas(cfg)
    torch.manual_seed(args.seed)
    net = build_net(cfg.model, sigmas).to(device).eval()
    short = sigmas[-args.sample_levels :].to(device)  # the smallest: step sizes as in the full run
    with torch.no_grad():  # cuDNN/allocator warm-up outside the timing
        net(
            torch.rand(args.sample_batch, 3, 32, 32, device=device),
            torch.zeros(args.sample_batch, device=device).long(),
        )
    end = time.perf_counter() + args.soft_s
    for kind in KIND_ORDER:
        # the experiment's own kind with its settings; the others as sample.py sampler=<kind> gives them, on the
        # training levels (num_steps=null) so every kind's NFE is for the same 232 sigmas
        choice = [] if kind == cfg.sampler.kind else [f"sampler={kind}"]
        grid = ["sampler.num_steps=null"] if kind in ("cas", "pc", "ode", "euler", "edm") else []
        over = [*choice, *grid, f"sampler.batch_size={args.sample_batch}"]
        sampler = build_sampler(sampler_cfg_for(cfg, over))
        nfe = sampler.kind.nfe(len(sigmas), sampler.denoise)
        fewer = {"annealed": ["sampler.n_steps_each=1"], "langevin": [f"sampler.n_steps={args.sample_levels}"]}
        if args.quick and kind in fewer:  # fewer network calls in the timed run; the NFE above is still the settings'
            sampler = build_sampler(sampler_cfg_for(cfg, [*over, *fewer[kind]]))
        row = {"kind": kind, "nfe": nfe, "batch": args.sample_batch, "autocast": sampler.autocast}
        if time.perf_counter() > end:
            emit({**row, "skipped": "soft time budget spent"})
            continue
        common.sync(device)
        t0 = time.perf_counter()
        res = sampler.draw(net, short, (3, 32, 32), args.seed, device, n=args.sample_batch, progress=False)
        common.sync(device)
        s_per_eval = (time.perf_counter() - t0) / res.nfe
        rate = args.sample_batch / (s_per_eval * nfe)
        emit({**row, "timed_nfe": res.nfe, "s_per_eval": s_per_eval, "images_per_s": rate, "fid50k_s": FID_N / rate})


# -- phase: the Lightning training loop ----------------------------------------------------
def phase_train(args) -> None:
    import lightning as L

    class StepTimer(L.Callback):
        """Seconds between the (synchronized) starts of consecutive training batches."""

        def __init__(self, device, soft_s: float):
            self.device, self.end, self.starts = device, time.perf_counter() + soft_s, []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            common.sync(self.device)
            self.starts.append(time.perf_counter())
            if len(self.starts) > args.warmup + 1 and time.perf_counter() > self.end:
                trainer.should_stop = True  # the soft budget: this batch is the last one

    root = Path(tempfile.mkdtemp(prefix="device_check_"))
    try:
        train_variants(args, root, StepTimer)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def train_variants(args, root: Path, StepTimer) -> None:
    from bench_dataloader import write_synthetic

    from ncsn.workflow.train import build_trainer, prepare_run

    steps = args.warmup + args.steps + 1  # + 1: the last interval ends at the next batch's start
    write_synthetic(root / "data", per_batch=max(-(-args.batch * steps // 5), 2))
    device = torch.device(args.device)
    variants = [v for v in VARIANTS if not (args.quick and VARIANTS[v][1])]
    for k, name in enumerate(variants):
        precision, compiled = VARIANTS[name]
        over = [
            f"trainer.precision={precision}",
            f"speed.compile={str(compiled).lower()}",
            f"trainer.max_steps={steps}",
            f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
            "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            f"data.num_workers={args.workers}",
            "fid=none",
            "logger=none",
            "callbacks.samples=null",
            "callbacks.best=null",
            "callbacks.checkpoint=null",
            "callbacks.val_loss_by_sigma=null",
            "callbacks.preemption=null",
        ]
        (root / f"run{k}").mkdir()
        cfg = compose_cfg(args, root / f"run{k}", *over, data_dir=root / "data")
        run = prepare_run(cfg)
        trainer = build_trainer(cfg, run)
        timer = StepTimer(device, (args.soft_s - (time.perf_counter() - START)) / (len(variants) - k))
        trainer.callbacks.append(timer)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        trainer.fit(run.model, run.datamodule)
        common.sync(device)
        gaps = [b - a for a, b in zip(timer.starts, timer.starts[1:])]
        timed = gaps[args.warmup :] or gaps[-1:]
        sec = statistics.median(timed)
        emit(
            {
                "variant": name,
                "precision": precision,
                "compile": compiled,
                "first_step_s": gaps[0] if gaps else None,
                "timed_steps": len(timed),
                "s_per_step": sec,
                "images_per_s": args.batch / sec,
                "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            }
        )
    for name in VARIANTS:
        if name not in variants:
            emit({"variant": name, "skipped": "--quick: torch.compile takes minutes on a CPU"})


# -- the parent: phases under a deadline, the tables, the JSON ------------------------------
def run_child(cmd: list, timeout: float) -> tuple[int | None, str, float]:
    """(exit code or None when killed at ``timeout``, stdout + stderr, seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=max(timeout, 1))
        return proc.returncode, out, time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: compile workers included
        out, _ = proc.communicate()
        return None, out, time.perf_counter() - t0


def child_phase(args, phase: str, timeout: float) -> dict:
    soft = max(timeout - (25 if args.quick else 45), 1)  # start-up and the last iteration fit under the hard limit
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--soft-s", f"{soft:.1f}"]
    cmd += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k in PASSED]
    cmd += ["--quick"] if args.quick else []
    code, out, secs = run_child(cmd, timeout)
    rows = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    status = "ok" if code == 0 else f"timed out after {secs:.0f} s" if code is None else f"exit {code}"
    return {"status": status, "seconds": round(secs, 1), "rows": rows, "tail": out[-2000:] if code != 0 else ""}


def phase_pytest(timeout: float) -> dict:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs", *files]
    code, out, secs = run_child(cmd, timeout)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    status = "ok" if code == 0 else f"timed out after {secs:.0f} s" if code is None else f"exit {code}"
    return {"status": status, "seconds": round(secs, 1), "files": files, "summary": lines[-1] if lines else ""}


def print_tables(result: dict) -> None:
    d = result["device_info"]
    print(f"\ndevice: {d['device_name']} ({d['device']}), torch {d['torch']}")
    p = result["pytest"]
    print(f"pytest -m gpu: {p['status']}, {p['summary']}")
    t = result["train"]
    print(
        f"\ntraining step, NCSNv2 CIFAR-10 ngf {result['ngf']} batch {result['batch']}, Lightning loop: {t['status']}"
    )
    print(f"  {'variant':<14} {'s/step':>9} {'images/s':>10} {'first step s':>13} {'peak GiB':>9} {'steps':>6}")
    for r in t["rows"]:
        if "skipped" in r:
            print(f"  {r['variant']:<14} skipped: {r['skipped']}")
            continue
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(
            f"  {r['variant']:<14} {r['s_per_step']:>9.4f} {r['images_per_s']:>10.1f} "
            f"{r['first_step_s']:>13.2f} {peak:>9} {r['timed_steps']:>6}"
        )
    s = result["sample"]
    print(f"\nsampling, batch {result['sample_batch']} (fp32 unless autocast shown), FID-50k: {s['status']}")
    print(f"  {'kind':<9} {'NFE':>5} {'s/eval':>9} {'images/s':>10} {'FID-50k sampling':>17}")
    for r in s["rows"]:
        if "skipped" in r:
            print(f"  {r['kind']:<9} {r['nfe']:>5} skipped: {r['skipped']}")
            continue
        print(
            f"  {r['kind']:<9} {r['nfe']:>5} {r['s_per_eval']:>9.4f} {r['images_per_s']:>10.3f} "
            f"{r['fid50k_s'] / 3600:>15.2f} h"
        )
    print(f"\ntotal {result['elapsed_s']:.0f} s (budget {result['budget_s']:.0f} s)")


PASSED = ("device", "ngf", "batch", "steps", "warmup", "sample_batch", "sample_levels", "workers", "seed")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="device_check.json", help="JSON file of every number")
    p.add_argument("--quick", action="store_true", help="tiny width/batch/steps (CPU smoke run, no compile)")
    p.add_argument("--budget-s", type=float, default=450.0, help="wall-clock limit of the whole check")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ngf", type=int, default=None, help="network width (default 128; --quick: 8)")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 128; --quick: 2)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps at most (default 20; --quick: 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed training steps first (default 3; --quick: 1)")
    p.add_argument(
        "--sample-batch", type=int, default=None, help="images per sampling batch (default 1000; --quick: 2)"
    )
    p.add_argument(
        "--sample-levels", type=int, default=None, help="levels timed per kind (default 3; --quick: 2, 1 step each)"
    )
    p.add_argument("--workers", type=int, default=None, help="training DataLoader workers (default 4; --quick: 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phase", choices=("sample", "train"), help=argparse.SUPPRESS)
    p.add_argument("--soft-s", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = {"ngf": (128, 8), "batch": (128, 2), "steps": (20, 2), "warmup": (3, 1)}
    defaults.update({"sample_batch": (1000, 2), "sample_levels": (3, 2), "workers": (4, 0)})
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.phase:
        return {"sample": phase_sample, "train": phase_train}[args.phase](args)

    deadline = START + args.budget_s
    info = common.device_info(args.device)
    print(f"device: {info['device_name']} ({args.device}); budget {args.budget_s:.0f} s", flush=True)
    result = {"device_info": info, "budget_s": args.budget_s, "quick": args.quick}
    result.update({k: getattr(args, k) for k in PASSED})
    result["pytest"] = phase_pytest(min(PHASE_SHARE["pytest"] * args.budget_s, deadline - time.perf_counter()))
    print(f"pytest -m gpu: {result['pytest']['status']} ({result['pytest']['seconds']} s)", flush=True)
    result["sample"] = child_phase(
        args, "sample", min(PHASE_SHARE["sample"] * args.budget_s, deadline - time.perf_counter())
    )
    print(f"sampling: {result['sample']['status']} ({result['sample']['seconds']} s)", flush=True)
    result["train"] = child_phase(args, "train", deadline - time.perf_counter() - 5)
    print(f"training: {result['train']['status']} ({result['train']['seconds']} s)", flush=True)
    result["elapsed_s"] = time.perf_counter() - START
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print_tables(result)
    for phase in ("sample", "train"):
        if result[phase]["tail"]:
            print(f"\n{phase} output (last lines):\n{result[phase]['tail']}")


START = time.perf_counter()

if __name__ == "__main__":
    main()
