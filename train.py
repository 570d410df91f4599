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
import sys

# a SIGTERM from the first line on ends the run as preempted (exit 0): recorded here until the
# run installs its own handler (ncsn.workflow.entry.SigtermGuard), which then acts on it
_SIGTERM: list = []
signal.signal(signal.SIGTERM, lambda signum, frame: _SIGTERM.append(signum))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

_STARTED = False  # set when the job starts: Hydra's own refusals come before


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    global _STARTED
    _STARTED = True
    from ncsn.workflow.console import quiet_console
    from ncsn.workflow.entry import run_entry
    from ncsn.workflow.run_summary import finish_job
    from ncsn.workflow.train import train

    quiet_console()  # each log line once, no library tips and deprecation noise
    results = {}
    code = run_entry(lambda c: results.update(train(c, _SIGTERM) or {}), cfg)
    # prints the summary; exits with a non-zero code; returns the sweep objective to Hydra
    return finish_job("train.py", cfg, code, results, cfg.paths.run_dir)


if __name__ == "__main__":
    try:
        main()
    except SystemExit as e:
        # Hydra refused the command line or the config before the job started (an unknown group
        # option, a malformed override, a run directory it cannot create): its message is above
        if e.code == 1 and not _STARTED:
            sys.exit(2)
        raise
    finally:
        # all is written: the interpreter's shutdown restores SIGTERM's default action, and a
        # SIGTERM in those last moments would turn a finished run into "killed by SIGTERM"
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
