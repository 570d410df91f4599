"""Validation loss per noise level: every level gets the same number of images, keyed by sigma."""

import csv
import json
import math

import pytest
import torch
from conftest import TINY_DIGITS, run_cli

from ncsn.core.losses import LevelLoss, dsm_loss
from ncsn.core.sigmas import make_sigmas


def run_levels(acc: LevelLoss, batches, score_fn, sigmas, seed=0):
    g = torch.Generator().manual_seed(seed)
    for x in batches:
        image, level = acc.pairs_for(len(x))
        out = dsm_loss(score_fn, x[image], sigmas, 2.0, generator=g, level_index=level)
        acc.add(out.per_example, level)
    return acc


@pytest.mark.parametrize("k", [None, 7, 3, 1])
def test_every_level_gets_the_same_count(k):
    """Uneven batches (the last one short), L=7: every image at every level (k=None), or a
    stratified share of k levels; only complete cycles count, so all counts are equal."""
    sigmas = make_sigmas("geometric", 1.0, 0.01, 7)
    batches = [torch.randn(n, 4) for n in (5, 5, 5, 2)]  # 17 images
    acc = run_levels(LevelLoss(7, k), batches, lambda x, i: torch.zeros_like(x), sigmas)
    per_level = 17 * (k or 7) // 7
    assert acc.counts.tolist() == [per_level] * 7
    assert LevelLoss.cost(7, 17, k) == (17 * (k or 7), per_level)
    assert acc.pairs == 17 * (k or 7)


def test_pairs_are_deterministic_and_stratified():
    acc = LevelLoss(5, 2)
    image, level = acc.pairs_for(3)
    assert image.tolist() == [0, 0, 1, 1, 2, 2] and level.tolist() == [0, 1, 2, 3, 4, 0]
    acc.add(torch.ones(6, dtype=torch.float64), level)
    assert acc.counts.tolist() == [1, 1, 1, 1, 1]  # one full cycle; the 6th pair is pending
    image, level = acc.pairs_for(2)
    assert level.tolist() == [1, 2, 3, 4]  # the cycle continues where it stopped
    acc.add(torch.full((4,), 3.0, dtype=torch.float64), level)
    assert acc.counts.tolist() == [2] * 5 and acc.sums.tolist() == [2, 4, 4, 4, 4]
    assert LevelLoss(5).levels_per_image == 5 and LevelLoss(5, 50).levels_per_image == 5  # k <= L
    with pytest.raises(ValueError):
        LevelLoss(5, 0)


def test_per_level_means_match_the_closed_form():
    """Gaussian data N(mu, s2 I) with the exact score: E l(sigma_i) = D s2 / (2 (s2 + sigma_i^2))."""
    D, s2, mu = 6, 0.7, 1.5
    sigmas = make_sigmas("geometric", 3.0, 0.1, 5)

    def exact(x, i):
        return -(x - mu) / (s2 + sigmas[i].to(x.dtype).view(-1, 1) ** 2)

    gen = torch.Generator().manual_seed(0)
    batches = [mu + math.sqrt(s2) * torch.randn(1000, D, dtype=torch.float64, generator=gen) for _ in range(20)]
    acc = run_levels(LevelLoss(5), batches, exact, sigmas)
    expected = 0.5 * D * s2 / (s2 + sigmas**2)
    assert torch.allclose(acc.sums / acc.counts, expected, rtol=0.02)


@pytest.mark.slow
def test_train_writes_loss_by_sigma_with_every_level(tmp_path):
    """The CLI: val_loss_by_sigma.csv has each validation's L levels, keyed by sigma, each with every
    validation image (data.num_val=64); the plot is written; no scalar per level in metrics.csv;
    W&B (offline) gets one table per validation."""
    run_dir = tmp_path / "run"
    tiny = [o for o in TINY_DIGITS if not o.startswith("logger=")]  # the default loggers: CSV and W&B
    res = run_cli(
        "train.py", *tiny, "sigmas.num_scales=4", "fid=none", "callbacks.best=null", f"hydra.run.dir={run_dir}"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader((run_dir / "val_loss_by_sigma.csv").open()))
    sigmas = make_sigmas("geometric", 1.0, 0.01, 4).tolist()
    steps = sorted({int(r["step"]) for r in rows})
    assert steps == [3, 6]  # one validation per epoch of 3 steps
    for step in steps:
        mine = [r for r in rows if int(r["step"]) == step]
        assert [int(r["level"]) for r in mine] == [0, 1, 2, 3]
        assert [float(r["sigma"]) for r in mine] == pytest.approx(sigmas, rel=1e-6)
        assert all(int(r["n_images"]) == 64 for r in mine)
        assert all(math.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in mine)
    assert (run_dir / "val_loss_by_sigma.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "val/loss" in header and not [k for k in header if k.startswith("val/loss_level")]
    # val/loss is the mean over levels of the last validation
    last = [float(r["loss"]) for r in rows if int(r["step"]) == 6]
    val = [ln.split(",")[header.index("val/loss")] for ln in (run_dir / "metrics.csv").read_text().splitlines()[1:]]
    assert float([v for v in val if v][-1]) == pytest.approx(sum(last) / 4, rel=1e-5)
    tables = sorted(run_dir.glob("wandb/offline-run-*/files/media/table/val/loss_by_sigma_*.table.json"))
    assert len(tables) == 2
    for table in tables:
        t = json.loads(table.read_text())
        assert t["columns"] == ["level", "sigma", "log10_sigma", "loss", "n_images"] and len(t["data"]) == 4
