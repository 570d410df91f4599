"""Compare the jobs of a sweep: ``python -m ncsn.compare SWEEP_DIR [--out DIR] [--metric KEY]``.

A sweep directory (a Hydra multirun of train.py or sample.py) holds one run directory per job,
possibly nested. A job directory is any directory with ``.hydra/config.yaml``; it may also hold
``.hydra/overrides.yaml`` (the job's command-line overrides), ``metrics.csv`` (Lightning's
CSVLogger: every evaluation of the metric during training), ``results.json`` (the final metrics,
``"status": "finished"``), ``val_loss_by_sigma.csv`` (the validation loss per noise level),
``samples/final.png`` (train.py) or ``samples.png`` (sample.py) and a ``*.log`` file.

The sweep's settings are the config keys whose value differs between jobs (the config flattened
to dotted keys, plus one key per override that is not a config key, e.g. a config-group choice
``model=small_conv``; keys under a varying group choice are folded into it). Never settings:
keys under ``hydra``/``paths``, any ``*dir``/``*dirpath`` key, any key whose value points inside
the job's or the sweep's directory (checkpoint and sample folders), and a key that only mirrors
another (its value equals a varying key's value in every job, e.g. ``callbacks.samples.seed`` =
``${seed}``; the key named on the command line is kept).

For each job: the best value of the metric (the minimum over the run's evaluations in
metrics.csv, with its step; sample.py runs have one evaluation) and the final one (results.json).
When ``seed`` varies, jobs that differ only by seed form one group: mean ± std (over seeds) and n.
Groups are sorted by the best value. Writes into the output directory (default: SWEEP_DIR):

- ``compare.md``: the ablation table with each group's final sample grids beside its row, the
  plots, a table of every job, and the unfinished or failed jobs with the last line of their log;
- ``compare.csv``: one row per job (every numeric result);
- ``compare.png``: best (solid, error bars = std over seeds) and final (dashed) metric against
  each setting, one line per combination of the other settings;
- ``loss_by_sigma.png``: the validation DSM loss against sigma of every job's (group's) last
  validation, overlaid (comparable across noise schedules: keyed by sigma, not level index).

Nothing about a single job can make the tool fail: a job whose ``.hydra/config.yaml`` cannot be
read (corrupt, empty, not a mapping) is skipped, listed with the reason and left out of the
tables, which are built from the other jobs. Exit status 2 with one ``error:`` line: SWEEP_DIR
missing or without a readable job, an output directory that cannot be written (read-only, full).
Standard library, PyYAML/OmegaConf, matplotlib.

Modules: ``jobs`` (reading a sweep), ``analysis`` (settings, best/final, groups), ``report``
(markdown, csv, plots), ``cli`` (the command line).
"""

from .analysis import IGNORE, Comparison, Group, best_and_final, compare, default_metric, varying_keys
from .cli import main
from .jobs import Job, find_jobs, load_job, read_history
from .report import plot, plot_loss_by_sigma, to_markdown, write_csv, write_report

__all__ = [
    "IGNORE",
    "Comparison",
    "Group",
    "Job",
    "best_and_final",
    "compare",
    "default_metric",
    "find_jobs",
    "load_job",
    "main",
    "plot",
    "plot_loss_by_sigma",
    "read_history",
    "to_markdown",
    "varying_keys",
    "write_csv",
    "write_report",
]
