"""Sample from a trained checkpoint; any sampler key overrides the run's saved settings.

    python sample.py ckpt_path=outputs/train/.../checkpoints/last.ckpt
    python sample.py ckpt_path=... sampler.step_lr=1e-5 sampler.n_steps_each=200 sampler.denoise=true
    python sample.py -m ckpt_path=... sampler.step_lr=1e-5,2e-5,5e-5    # a step-size ablation

Writes samples.npz (array ``samples``), samples.png and results.json into its run directory.
Exit status: 0 done, 2 bad config or checkpoint.
"""

import hydra
from omegaconf import DictConfig

from ncsn.workflow.entry import run_job, run_script


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> float | None:
    from ncsn.workflow.sample import sample

    return run_job("sample.py", cfg, sample, "out_dir")


if __name__ == "__main__":
    run_script(main)
