"""FID and wall time against network evaluations (NFE) for each sampler kind, on one checkpoint.

Each row is exactly ``python sample.py ckpt_path=CKPT mode=fid eval.n_samples=N seed=0
[sampler=<kind>] sampler.<key>=<value> ...`` (the same workflow functions: ``load_run``,
``sampler_cfg_for``, ``ModeContext``, ``run_fid``), run in one process so that loading the checkpoint and the FID
statistics is paid once. Prints one JSON line per row and writes them to --out.

    python bench/sweep_samplers.py --ckpt outputs/.../checkpoints/last.ckpt --n 500 --out sweep.jsonl \
        --rows "sampler.n_steps_each=20" "sampler=cas sampler.eta=0.5" "sampler=ode sampler.num_steps=10"
    python bench/sweep_samplers.py --plot docs/sampling_fid_nfe.png --inputs a.jsonl b.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ncsn.workflow.build import build_sampler
from ncsn.workflow.sample import load_run, sampler_cfg_for
from ncsn.workflow.sample_modes import ModeContext, run_fid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plot", help="write FID and wall time against NFE from --inputs (JSON lines) to this PNG")
    ap.add_argument("--inputs", nargs="*", default=[])
    ap.add_argument("--ckpt")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--rows", nargs="+", help='each: sample.py overrides, "sampler=<kind> sampler.<key>=<value> ..."')
    args = ap.parse_args()
    if args.plot:
        return plot(args.inputs, args.plot)
    torch.set_num_threads(1)
    train_cfg, net, datamodule = load_run(args.ckpt, "cpu")
    cfg = OmegaConf.create({"seed": args.seed, "eval": {"n_samples": args.n, "denoise_both": False, "save_npz": False}})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for row in args.rows:
        sampler = build_sampler(sampler_cfg_for(train_cfg, row.split()))  # as sample.py composes the row
        ctx = ModeContext(cfg, train_cfg, net, datamodule, sampler, out.parent, "cpu")
        start = time.perf_counter()
        res = run_fid(ctx)
        line = {"row": row, "kind": sampler.name, "nfe": res["nfe"], "fid": res["fid"], "time_s": res["time_s"]}
        line["total_s"] = time.perf_counter() - start
        print(json.dumps(line), flush=True)
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")


def plot(inputs: list, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for path in inputs:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        tag = Path(path).stem
        for kind in sorted({r["kind"] for r in rows}):
            pts = sorted((r["nfe"], r["fid"], r["time_s"]) for r in rows if r["kind"] == kind)
            label = f"{tag}: {kind}"
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
            ax2.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=label)
    for ax, ylabel in ((ax1, "FID (digits classifier, 500 samples)"), (ax2, "wall time for 500 samples [s]")):
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per sample (NFE)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)


if __name__ == "__main__":
    main()
