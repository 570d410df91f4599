"""Train a noise-conditional score network with denoising score matching.

    python train.py                         # default: small conv net on 8x8 digits, CPU, minutes
    python train.py experiment=toy_gmm      # the NCSN toy experiment (2-D mixture, MLP)
    python train.py -m sweep=num_scales     # a named ablation (one run directory per job)

All keys: conf/ (README "Configuration"). Exit status: 0 done (or preempted by SIGTERM: rerun to
resume; under -m the sweep stops at that job, rerun with the same hydra.sweep.dir), 2 bad
config/data/checkpoint or run directory in use, 3 diverged (non-finite loss, or more than
loss.max_skipped skipped batches), 130 interrupted (Ctrl-C).
"""

import signal

# a SIGTERM from the first line on ends the run as preempted (exit 0): recorded here until the
# run installs its own handler (ncsn.workflow.entry.SigtermGuard), which then acts on it
_SIGTERM: list = []
signal.signal(signal.SIGTERM, lambda signum, frame: _SIGTERM.append(signum))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from ncsn.workflow.entry import run_job, run_script  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from ncsn.workflow.train import train

    return run_job("train.py", cfg, lambda c: train(c, _SIGTERM), "paths.run_dir")


if __name__ == "__main__":
    run_script(main, block_sigterm_at_exit=True)
