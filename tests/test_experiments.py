"""Every paper setup composes and trains one step on CPU (tiny width, tiny batch), reading data
that the test writes in the real on-disk formats; a reduced NCSN learns the digits."""

import csv

import pytest
import torch
from conftest import ROOT, TINY_DIGITS
from fakedata import write_celeba, write_cifar10, write_mnist
from hydra import compose, initialize_config_dir

from ncsn.training.score_model import ScoreModel
from ncsn.workflow.build import build_datamodule, build_net, build_sampler, build_sigmas, check_net_matches_data
from ncsn.workflow.config import validate_train
from ncsn.workflow.entry import EXIT_OK, run_entry
from ncsn.workflow.train import train

WRITERS = {
    "mnist": write_mnist,
    "cifar10": write_cifar10,
    "celeba": lambda root: write_celeba(root, counts={"train": 4, "valid": 2, "test": 2}),
}
EXPERIMENTS = {
    "ncsn_mnist": ("mnist", (1, 28, 28), 10),
    "ncsn_cifar10": ("cifar10", (3, 32, 32), 10),
    "ncsn_celeba": ("celeba", (3, 32, 32), 10),
    "ncsnv2_cifar10": ("cifar10", (3, 32, 32), 232),
    "ncsnv2_celeba": ("celeba", (3, 64, 64), 500),
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_paper_experiment_composes_and_trains_one_step(experiment, tmp_path):
    dataset, shape, num_scales = EXPERIMENTS[experiment]
    WRITERS[dataset](tmp_path / "data")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={experiment}",
                "model.ngf=8",
                "data.batch_size=2",
                "data.num_workers=0",
                f"paths.data_dir={tmp_path / 'data'}",
                f"paths.run_dir={tmp_path / 'run'}",
            ],
        )
    validate_train(cfg)
    sigmas = build_sigmas(cfg)
    assert len(sigmas) == num_scales and cfg.sigmas.sigma_end == 0.01
    build_sampler(cfg.sampler)
    dm = build_datamodule(cfg, 1)
    assert tuple(dm.data_shape) == shape
    dm.check()
    dm.setup("fit")
    net = build_net(cfg.model, sigmas)
    check_net_matches_data(net, shape)
    model = ScoreModel(net, lr=cfg.optim.lr, ema_decay=cfg.optim.ema_decay, anneal_power=cfg.loss.anneal_power)
    opt = model.configure_optimizers()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (2, *shape) and 0 <= x.min() and x.max() <= 1
    before = [p.detach().clone() for p in net.parameters()]
    loss = model.training_step((x, _), 0)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


@pytest.mark.slow
def test_reduced_ncsn_on_digits_lowers_the_validation_dsm_loss(tmp_path):
    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        tiny = [o for o in TINY_DIGITS if not o.startswith("model.")]
        cfg = compose(
            "train",
            overrides=[
                *tiny,
                "model=ncsn",
                "model.ngf=8",
                "fid=none",
                "callbacks.best=null",
                "trainer.max_steps=160",
                "trainer.limit_train_batches=null",
                "callbacks.samples.every_n_epochs=1000",
                f"paths.run_dir={run_dir}",
            ],
        )
    assert run_entry(train, cfg) == EXIT_OK
    with open(run_dir / "metrics.csv", newline="") as f:
        val = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss")]
    assert len(val) >= 5 and val[-1] < 0.85 * val[0], val
