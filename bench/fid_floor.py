"""The real-data floor of a FID: held-out real images against the training statistics.

The FID of N generated images is only meaningful next to what real images not seen in training
score under the same protocol (same feature extractor, same training statistics). This prints,
for a data config (default: the digits, with the classifier FID of conf/fid/classifier.yaml):

* the number of held-out (validation) images and their FID against the training statistics,
  with the 95% bootstrap interval that ``sample.py mode=fid`` reports;
* the finite-sample part of it: the mean FID of random subsets of n held-out images, and of n
  training images (which are in the statistics, so theirs is bias alone), for several n;
* the FID of the training images dequantized as in training (data with ``levels``: a perfect
  model of the dequantized data scores this, not 0, against statistics of the stored levels);
* a fit of the held-out subsets' FID to a + b / n (FID is biased by ~ b / n): a is the floor at
  n -> infinity and a + b / N the floor expected for N images (e.g. a 2,000-sample FID).

    python bench/fid_floor.py                       # digits, classifier FID
    python bench/fid_floor.py --data conf/data/digits.yaml --fid conf/fid/classifier.yaml --cache-dir cache
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchmetrics.image.fid import _compute_fid

from ncsn.data.transforms import uniform_dequantize
from ncsn.metrics.spread import bootstrap_fid_interval
from ncsn.workflow.evaluation import build_fid_for


def frechet(features: torch.Tensor, mu_r, cov_r) -> float:
    """FID of ``features`` (n, D) against fixed real statistics, as the metric computes it."""
    f = features.double()
    centred = f - f.mean(0)
    mu_r, cov_r = (torch.as_tensor(a, dtype=torch.float64) for a in (mu_r, cov_r))
    return float(_compute_fid(mu_r, cov_r, f.mean(0), centred.t().mm(centred) / (len(f) - 1)))


def split_images(datamodule, split: str) -> torch.Tensor:
    return torch.cat(list(datamodule.iter_unaugmented(split, 1000)))


def subset_mean(features: torch.Tensor, n: int, repeats: int, mu_r, cov_r, gen: torch.Generator) -> float:
    return float(
        np.mean(
            [frechet(features[torch.randperm(len(features), generator=gen)[:n]], mu_r, cov_r) for _ in range(repeats)]
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="conf/data/digits.yaml", help="data config (a _target_ node)")
    ap.add_argument("--fid", default="conf/fid/classifier.yaml", help="FID config (conf/fid/*.yaml)")
    ap.add_argument("--cache-dir", default="cache", help="where the classifier and the statistics are cached")
    ap.add_argument("--repeats", type=int, default=20, help="random subsets per n")
    ap.add_argument("--at", type=int, default=2000, help="also print the fitted floor for this many images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data_cfg = OmegaConf.load(args.data)
    fid_cfg = OmegaConf.load(args.fid)
    fid_cfg.cache_dir = args.cache_dir
    datamodule = instantiate(data_cfg)
    fid = build_fid_for(fid_cfg, datamodule)
    mu_r, cov_r = fid.real_stats()
    held, train = split_images(datamodule, "val"), split_images(datamodule, "train")
    f_held, f_train = fid.features(held).float(), fid.features(train).float()
    n_held = len(held)
    value = frechet(f_held, mu_r, cov_r)
    lo, hi = bootstrap_fid_interval(f_held, mu_r, cov_r, value, 200, args.seed)
    out = {
        "held_out_images": n_held,
        "train_images": len(train),
        "backend": fid.name,
        "floor_fid": round(value, 3),
        "floor_ci95": [round(lo, 3), round(hi, 3)],
        "subsets": [],
    }
    gen = torch.Generator().manual_seed(args.seed)
    ns = sorted({n for n in (n_held // 4, n_held // 2, (3 * n_held) // 4, n_held) if n >= 20})
    for n in ns:
        held_n = subset_mean(f_held, n, args.repeats, mu_r, cov_r, gen) if n < n_held else value
        train_n = subset_mean(f_train, n, args.repeats, mu_r, cov_r, gen)
        out["subsets"].append({"n": n, "held_out_fid": round(held_n, 3), "train_fid": round(train_n, 3)})
    if getattr(datamodule, "levels", None):  # what a perfect model of the dequantized training data scores
        noisy = uniform_dequantize(train, datamodule.levels, generator=torch.Generator().manual_seed(args.seed))
        out["train_dequantized_fid"] = round(frechet(fid.features(noisy).float(), mu_r, cov_r), 3)
    ys = [s["held_out_fid"] for s in out["subsets"]]
    b, a = np.polyfit(1.0 / np.array(ns), ys, 1)
    out["fit"] = {
        "fid_inf": round(float(a), 3),
        "per_inverse_n": round(float(b), 1),
        f"floor_at_{args.at}": round(float(a + b / args.at), 3),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
