"""Sample from a trained checkpoint; any sampler key overrides the run's saved settings.

    python sample.py ckpt_path=outputs/train/.../checkpoints/last.ckpt
    python sample.py ckpt_path=... sampler.step_lr=1e-5 sampler.n_steps_each=200 sampler.denoise=true
    python sample.py -m ckpt_path=... sampler.step_lr=1e-5,2e-5,5e-5    # a step-size ablation

Writes samples.npz (array ``samples``), samples.png and results.json into its run directory.
Exit status: 0 done, 2 bad config or checkpoint.
"""

import sys

import hydra
from omegaconf import DictConfig

_STARTED = False  # set when the job starts: Hydra's own refusals come before


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> float | None:
    global _STARTED
    _STARTED = True
    from ncsn.workflow.console import quiet_console
    from ncsn.workflow.entry import run_entry
    from ncsn.workflow.run_summary import finish_job
    from ncsn.workflow.sample import sample

    quiet_console()  # each log line once, no library tips and deprecation noise
    results = {}
    code = run_entry(lambda c: results.update(sample(c) or {}), cfg)
    # prints the summary; exits with a non-zero code; returns the sweep objective to Hydra
    return finish_job("sample.py", cfg, code, results, cfg.out_dir)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as e:
        # Hydra refused the command line or the config before the job started (an unknown group
        # option, a malformed override, a run directory it cannot create): its message is above
        if e.code == 1 and not _STARTED:
            sys.exit(2)
        raise
