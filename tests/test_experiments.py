"""Every paper setup composes and trains one step on CPU (tiny width, tiny batch), reading data
that the test writes in the real on-disk formats; a reduced NCSN learns the digits."""

import csv

import pytest
import torch
from conftest import ROOT, TINY_DIGITS
from fakedata import write_celeba, write_cifar10, write_mnist
from hydra import compose, initialize_config_dir

from ncsn.workflow.build import (
    build_datamodule,
    build_model,
    build_net,
    build_sampler,
    build_sigmas,
    check_net_matches_data,
)
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
    model = build_model(cfg, net, {})
    opt = model.configure_optimizers()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (2, *shape) and 0 <= x.min() and x.max() <= 1
    before = [p.detach().clone() for p in net.parameters()]
    loss = model.training_step((x, _), 0)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def _papers_table() -> dict:
    """README's "The papers' setups" table: {experiment: {column: cell}}."""
    lines = (ROOT / "README.md").read_text().split("## The papers' setups", 1)[1].splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    header = rows[0]
    return {r[0].strip("`"): dict(zip(header, r)) for r in rows[1:] if r[0].startswith("`")}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_paper_experiment_composes_to_the_readme_table(experiment, tmp_path):
    """Each paper experiment (its delta over conf/experiment/base/) composes to the values the
    README's table and the sentence below it state."""
    row = _papers_table()[experiment]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", f"paths.run_dir={tmp_path}"])
    net, ngf = row["net"].split()
    iterations = int(row["iterations"].removesuffix("k")) * 1000
    ema = None if row["EMA"] == "–" else float(row["EMA"])
    assert cfg.model._target_.rsplit(".", 1)[1] == {"NCSN": "CondRefineNetDilated", "NCSNv2": "NCSNv2"}[net]
    assert cfg.model.ngf == int(ngf) and cfg.data.image_size == int(row["data"].split()[-1])
    assert cfg.sigmas.sigma_begin == float(row["σ_1"]) and cfg.sigmas.num_scales == int(row["L"])
    assert cfg.sampler.n_steps_each == int(row["T"]) and cfg.sampler.step_lr == float(row["ε"])
    assert cfg.optim.lr == float(row["lr"]) and cfg.trainer.max_steps == iterations and cfg.optim.ema_decay == ema
    # "All use Adam (0.9, 0.999), batch 128, sigma_L = 0.01, geometric sigma, lambda = sigma^2, U[0, 1]"
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.data.batch_size) == (0.9, 0.999, 128)
    assert (cfg.sigmas.kind, cfg.sigmas.sigma_end, cfg.loss.anneal_power) == ("geometric", 0.01, 2.0)
    assert (cfg.sampler.init_low, cfg.sampler.init_high) == (0.0, 1.0)
    assert cfg.callbacks.checkpoint.every_n_train_steps == 5000 and cfg.eval.n_samples == 1000


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
