"""FID during training: the callback's epochs, keys and images, DDP synchronisation, and an FID
that goes down as the digits model learns."""

import csv
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT, TINY_DIGITS, free_port
from hydra import compose, initialize_config_dir

from ncsn.data.digits import DigitsDataModule
from ncsn.workflow.build import build_net, build_sampler, build_sigmas
from ncsn.workflow.entry import EXIT_OK, run_entry
from ncsn.workflow.evaluation import build_fid_for
from ncsn.workflow.sample import load_run
from ncsn.workflow.train import train


def compose_train(overrides, run_dir, cache):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *TINY_DIGITS,
                "fid.classifier_epochs=3",
                f"paths.cache_dir={cache}",
                *overrides,
                f"paths.run_dir={run_dir}",
            ],
        )


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_callback_epochs_keys_images_and_no_extractor_in_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    cfg = compose_train(
        [
            "trainer.max_steps=-1",
            "trainer.max_epochs=4",
            "trainer.limit_train_batches=2",
            "trainer.num_sanity_val_steps=1",
            "callbacks.samples.every_n_epochs=2",
            "eval.n_samples=16",
            "eval.denoise_both=true",
        ],
        run_dir,
        tmp_path / "cache",
    )
    assert run_entry(train, cfg) == EXIT_OK
    grids = sorted(p.name for p in (run_dir / "samples").glob("epoch*.png"))
    assert grids == ["epoch0001_step0000004.png", "epoch0003_step0000008.png"]  # not in the sanity check
    logged = [r for r in rows(run_dir / "metrics.csv") if r.get("fid")]
    assert [int(r["epoch"]) for r in logged] == [1, 3]
    for r in logged:
        assert float(r["fid/denoised"]) > 0 and float(r["fid/no_denoise"]) > 0 and float(r["sample/time_s"]) > 0
        assert float(r["fid"]) == float(r["fid/denoised"])  # the configured sampler denoises (digits)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(k.startswith(("net.", "ema.", "skipped_batches")) for k in ckpt["state_dict"])
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()


def _rank(rank, world, port, cache, images, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from omegaconf import OmegaConf

    fid_cfg = OmegaConf.create(
        {
            "backend": "classifier",
            "stats_path": None,
            "cache_dir": str(cache),
            "batch_size": 100,
            "classifier_seed": 0,
            "classifier_epochs": 3,
        }
    )
    fid = build_fid_for(fid_cfg, DigitsDataModule(num_val=64, batch_size=64))
    fid.update(images[rank::world])
    out[rank] = fid.compute()  # torchmetrics sums the generated-image states across ranks
    out[f"real{rank}"] = fid.num_real  # the real side is not multiplied by the world size
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_give_the_same_fid_as_one_process(tmp_path):
    from omegaconf import OmegaConf

    fid_cfg = OmegaConf.create(
        {
            "backend": "classifier",
            "stats_path": None,
            "cache_dir": str(tmp_path),
            "batch_size": 100,
            "classifier_seed": 0,
            "classifier_epochs": 3,
        }
    )
    fid = build_fid_for(fid_cfg, DigitsDataModule(num_val=64, batch_size=64))  # builds and caches
    images = torch.rand(90, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    fid.update(images)
    single = fid.compute()
    out = mp.Manager().dict()
    mp.spawn(_rank, args=(2, free_port(), tmp_path, images, out), nprocs=2, join=True)
    assert abs(out[0] - single) < 1e-6 * max(1.0, single) and abs(out[1] - single) < 1e-6 * max(1.0, single)
    assert out["real0"] == out["real1"] == fid.num_real


@pytest.mark.slow
def test_digits_fid_decreases_as_the_model_learns(tmp_path):
    """FID (digits classifier features, 300 samples) of the trained EMA weights vs the same
    network untrained, both sampled with the run's sampler."""
    run_dir = tmp_path / "run"
    cfg = compose_train(
        [
            "model.ngf=16",
            "model.num_blocks=2",
            "trainer.max_steps=300",
            "trainer.limit_train_batches=null",
            "callbacks.samples.every_n_epochs=1000",
            "trainer.check_val_every_n_epoch=1000",
            "sampler.n_steps_each=10",
            "sampler.step_lr=1.6e-5",
            "optim.ema_decay=0.95",
        ],
        run_dir,
        tmp_path / "cache",
    )
    assert run_entry(train, cfg) == EXIT_OK
    train_cfg, trained, dm = load_run(str(run_dir / "checkpoints" / "last.ckpt"))
    untrained = build_net(train_cfg.model, build_sigmas(train_cfg)).eval()
    fid = build_fid_for(train_cfg.fid, dm)
    sampler = build_sampler(train_cfg.sampler)
    scores = []
    for net in (untrained, trained):
        fid.reset()
        res = sampler.draw(net, net.sigmas, (1, 8, 8), torch.Generator().manual_seed(0), n=300, progress=False)
        fid.update(res.samples.clamp(0, 1))
        scores.append(fid.compute())
    assert scores[1] < 0.7 * scores[0], scores
