"""sigmas=auto: NCSNv2's techniques computed from the training data and saved with the run."""

import numpy as np
import torch
from conftest import ROOT, TINY_DIGITS
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ncsn.core.noise_design import gamma_for_overlap, max_pairwise_distance, num_scales_for, step_lr_for
from ncsn.data.digits import load_digits_arrays
from ncsn.workflow.entry import EXIT_OK, run_entry
from ncsn.workflow.train import train


def test_auto_sigmas_on_digits_are_computed_saved_and_used(tmp_path):
    run_dir = tmp_path / "run"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *TINY_DIGITS,
                "sigmas=auto",
                "fid=none",
                "callbacks.best=null",
                "sigmas.sample_size=null",
                f"paths.run_dir={run_dir}",
            ],
        )
    assert run_entry(train, cfg) == EXIT_OK
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    # the same numbers by hand: all training images (the fixed split), D = 64
    x, _ = load_digits_arrays()
    perm = np.random.default_rng(0).permutation(len(x))
    train_x = torch.from_numpy(x[perm[: len(x) - 64]])
    sigma_1 = max_pairwise_distance(train_x)
    num_scales = num_scales_for(sigma_1, 0.01, gamma_for_overlap(0.5, 64))
    gamma = (sigma_1 / 0.01) ** (1 / (num_scales - 1))
    assert saved.sigmas.kind == "geometric"
    assert abs(saved.sigmas.sigma_begin - sigma_1) < 1e-9 and saved.sigmas.num_scales == num_scales
    assert abs(saved.sampler.step_lr - step_lr_for(gamma, 0.01, saved.sampler.n_steps_each)) < 1e-15
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["net.sigmas"].shape == (num_scales,)
    assert abs(float(ckpt["state_dict"]["net.sigmas"][0]) - sigma_1) < 1e-4
