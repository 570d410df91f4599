"""Images per second of the CIFAR-10 training loader (flip + dequantize, shuffled) per worker count.

    python bench/bench_dataloader.py --workers 0 2 --batches 100 [--root DIR]
    python bench/bench_dataloader.py --quick      # smoke check: 320 synthetic images, 0 workers, 2 batches

Without a real CIFAR-10 under --root (``<root>/cifar-10-batches-py/``), a synthetic 50,000-image
training set (plus 10,000 test images) in the real format is written to a temporary folder first.
Prints one JSON line per worker count: setup time (reading the pickles), time to the first batch
(worker start-up), then images/s over --batches further batches.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ncsn.data.cifar10 import FOLDER, TEST_FILES, TRAIN_FILES, Cifar10DataModule  # noqa: E402


def write_synthetic(root: Path, per_batch: int = 10_000) -> None:
    """The real format: 5 training batches of ``per_batch`` images and as many test images."""
    sys.path.insert(0, str(REPO / "tests"))
    from fakedata import write_cifar10

    write_cifar10(root, per_batch=per_batch, n_test=per_batch)


def measure(root: Path, workers: int, batches: int, batch_size: int) -> dict:
    dm = Cifar10DataModule(
        root=str(root),
        batch_size=batch_size,
        num_workers=workers,
        random_flip=True,
        dequantize=True,
        pin_memory=False,
        persistent_workers=False,
    )
    t0 = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    it = iter(dm.train_dataloader())
    t0 = time.perf_counter()
    next(it)
    first_s = time.perf_counter() - t0
    n = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
        n += x.shape[0]
    elapsed = time.perf_counter() - t0
    del it
    return {
        "dataset": "cifar10",
        "batch_size": batch_size,
        "workers": workers,
        "batches": batches,
        "setup_s": round(setup_s, 3),
        "first_batch_s": round(first_s, 3),
        "images_per_s": round(n / elapsed, 1),
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="folder containing cifar-10-batches-py/ (else synthetic)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts to measure")
    p.add_argument("--batches", type=int, default=100, help="batches timed per configuration (<= 389)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="smoke check: 320 synthetic images, 0 workers, 2 batches of 16")
    args = p.parse_args(argv)
    per_batch = 10_000
    if args.quick:
        args.root, args.workers, args.batches, args.batch_size, per_batch = None, [0], 2, 16, 64
    n_train = 5 * per_batch
    if args.batches > n_train // args.batch_size - 1:
        p.error(f"--batches {args.batches}: one epoch of {n_train:,} images has {n_train // args.batch_size} batches")

    real = args.root is not None and all((Path(args.root) / FOLDER / n).is_file() for n in TRAIN_FILES + TEST_FILES)
    with tempfile.TemporaryDirectory(prefix="ncsn-bench-") as tmp:
        root = Path(args.root) if real else Path(tmp)
        if not real:
            write_synthetic(root, per_batch)
        for w in args.workers:
            print(json.dumps({**measure(root, w, args.batches, args.batch_size), "synthetic": not real}), flush=True)


if __name__ == "__main__":
    main()
