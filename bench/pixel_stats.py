"""Pixel statistics of saved samples against the training data: where an FID difference comes from.

For images stored on ``levels`` grey levels (the digits: 17, k / 16), the FID's classifier is
fitted to and compared with those exact values, so it sees how many pixels sit exactly at the
extremes (background 0, full ink 1) and how far the others are from a level. This prints one JSON
line per input (the training images first): mean, std, the fraction of pixels at 0 and at 1 (after
the 8-bit rounding of ``fid_samples.npz``), in (0, 0.03) and in (0.97, 1), and the RMS distance
to the nearest level of the pixels strictly inside (0, 1); with ``--fid``, the classifier FID
against the training statistics as saved, mapped onto the nearest level, and with the contrast
stretched by ``--stretch`` around 0.5 (diagnostics of a sampler's output, not a fix), and the
L2 distance of each image to its nearest training image (median; fraction under 1.0), with the
held-out images as the reference for new digits (samples much closer than those copy training
images).

    python sample.py ckpt_path=<run>/checkpoints/last.ckpt mode=fid eval.n_samples=2000 eval.save_npz=true \\
        sampler.num_steps=5 seed=0 out_dir=<out>/n5        # and 11, 21: 9 / 21 / 41 NFE
    python bench/pixel_stats.py <out>/n5/fid_samples.npz <out>/n11/fid_samples.npz <out>/n21/fid_samples.npz --fid
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pixel_stats(x: np.ndarray, levels: int) -> dict:
    """Statistics of images ``x`` (any shape, values in [0, 1]) stored on ``levels`` grey levels."""
    x = np.asarray(x, dtype=np.float64)
    inner = x[(x > 0) & (x < 1)]
    off = inner - np.round(inner * (levels - 1)) / (levels - 1)
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "at_0": float((x == 0).mean()),
        "at_1": float((x == 1).mean()),
        "near_0": float(((x > 0) & (x < 0.03)).mean()),
        "near_1": float(((x > 0.97) & (x < 1)).mean()),
        "off_level_rms": float(np.sqrt((off**2).mean())) if inner.size else 0.0,
    }


def nearest_train(x: np.ndarray, train: np.ndarray) -> dict:
    """The L2 distance of each image of ``x`` to its nearest training image: median, and the
    fraction under 1.0."""
    d = torch.cdist(torch.from_numpy(x).flatten(1).double(), torch.from_numpy(train).flatten(1).double())
    nearest = d.min(1).values
    return {"nn_train_median": float(nearest.median()), "nn_train_below_1": float((nearest < 1.0).double().mean())}


def load_samples(path: Path) -> np.ndarray:
    """``fid_samples.npz`` (sample.py mode=fid eval.save_npz=true: uint8, N x H x W x C) as N x C x H x W in [0, 1]."""
    with np.load(path) as z:
        images = z[z.files[0]]
    return images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("npz", nargs="+", type=Path, help="fid_samples.npz files")
    ap.add_argument("--levels", type=int, default=17, help="grey levels of the stored data (digits: 17)")
    ap.add_argument("--fid", action="store_true", help="also the classifier FID (the digits; needs its cache)")
    ap.add_argument("--stretch", type=float, default=1.05, help="contrast factor of the stretched variant")
    ap.add_argument("--cache-dir", default="cache", help="where the FID classifier and statistics are cached")
    args = ap.parse_args()
    torch.set_num_threads(1)
    fid = train = None
    if args.fid:
        from fid_floor import frechet, split_images
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        from ncsn.workflow.evaluation import build_fid_for

        datamodule = instantiate(OmegaConf.load("conf/data/digits.yaml"))
        fid_cfg = OmegaConf.load("conf/fid/classifier.yaml")
        fid_cfg.cache_dir = args.cache_dir
        fid = build_fid_for(fid_cfg, datamodule)
        mu_r, cov_r = fid.real_stats()
        train = split_images(datamodule, "train").numpy()
        held_out = split_images(datamodule, "val").numpy()

        def score(images: np.ndarray) -> float:
            return round(frechet(fid.features(torch.from_numpy(images).float()).float(), mu_r, cov_r), 3)

    references = [("train", train), ("held-out", held_out)] if train is not None else []
    inputs = references + [(str(p), load_samples(p)) for p in args.npz]
    top = args.levels - 1
    for name, x in inputs:
        row = {"images": name, "n": len(x), **pixel_stats(x, args.levels)}
        if fid is not None:
            row["fid"] = score(x)
            row["fid_nearest_level"] = score(np.round(x * top) / top)
            row[f"fid_stretch_{args.stretch}"] = score(np.clip((x - 0.5) * args.stretch + 0.5, 0, 1))
            if name != "train":
                row.update(nearest_train(x, train))
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
