"""Train a noise-conditional score network with denoising score matching.

    python train.py                         # default: small conv net on 8x8 digits, CPU, minutes
    python train.py experiment=toy_gmm      # the NCSN toy experiment (2-D mixture, MLP)
    python train.py -m sweep=num_scales     # a named ablation (one run directory per job)

All keys: conf/ (README "Configuration"). Exit status: 0 done, 2 bad config/data/checkpoint,
3 diverged (non-finite loss).
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from ncsn.workflow.entry import run_entry
    from ncsn.workflow.train import train

    code = run_entry(train, cfg)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
