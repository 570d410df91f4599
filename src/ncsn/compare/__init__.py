"""Compare the jobs of a sweep: ``python -m ncsn.compare SWEEP_DIR [--out DIR] [--metric KEY]``.

A sweep directory (a Hydra multirun of train.py or sample.py) holds one run directory per job,
possibly nested. A job directory is any directory with ``.hydra/config.yaml``; it may also hold
``.hydra/overrides.yaml`` (the job's command-line overrides), ``metrics.csv`` (Lightning's
CSVLogger: every evaluation of the metric during training), ``results.json`` (the final metrics,
``"status": "finished"``), ``val_loss_by_sigma.csv`` (the validation loss per noise level),
``samples/final.png`` (train.py) or ``samples.png`` (sample.py) and a ``*.log`` file.

The sweep's settings are the keys the user swept whose value differs between jobs: when every job
has ``overrides.yaml`` (train.py and sample.py write it), only config keys named there (a config-
group choice such as ``model=small_conv`` folds the keys under it), never keys derived from them;
otherwise every config key that differs (the config flattened to dotted keys). Never settings:
keys under ``hydra``/``paths``, any ``*dir``/``*dirpath`` key, any key whose value points inside
the job's or the sweep's directory, and a key that only mirrors another (its value equals a
varying key's value in every job; the key named on the command line is kept). A sample.py job
that re-scores a training job's checkpoint (``ckpt_path`` swept) takes the training job's swept
settings as ``train_config.<key>`` instead of ``ckpt_path``.

A training job re-scored by ``sample.py mode=rescore`` holds ``rescore/<tag>/results.json``: the
tables then use the re-score's values (FID, KID, intervals, bits/dim: one evaluation per job, the
same seeds for every job) in place of the training run's (which stay in the per-job table as
``training <key>``), and compare.md says so; ``--rescore TAG`` picks a re-score (default: the one
most finished jobs have), ``--rescore none`` the training values.

For each job: the best value of the metric (the minimum over the run's evaluations in
metrics.csv, with its step) and the final one (results.json); sample.py runs have one evaluation:
one column. When ``seed`` (or ``train_config.seed``) varies, jobs that differ only by it form one
group: mean ± std (over seeds) and n. Groups are sorted by the best value, ties by setting value.
Writes into the output directory (default: SWEEP_DIR):

- ``compare.md``: the ablation table with each group's sample grids beside its row (full size,
  linked), the plots, a table of every job, and the unfinished or failed jobs with the last line
  of their log; schedule-dependent results (``val/loss``) stay out of the ablation table when the
  sweep varies ``sigmas.*``;
- ``table.csv`` / ``table.tex``: the ablation table as CSV (mean, std columns) and LaTeX (booktabs);
- ``compare.csv``: one row per job (every numeric result, none repeating the metric's columns);
- ``compare.png``: best (solid, error bars = std over seeds) and final (dashed) metric against
  each setting, one series per combination of the other settings (categories as points, never
  joined; log y when the values span more than 10x); for an Optuna search (``optimization_results
  .yaml`` or ``optuna.journal`` in SWEEP_DIR): one scatter per parameter against the objective;
- ``nfe.png`` (a ``sampler=<kind>`` sweep): the metric, and ``kid`` when present, against NFE, one
  series per kind;
- ``loss_by_sigma.png``: the validation DSM loss against sigma of every job's (group's) last
  validation, overlaid (comparable across noise schedules: keyed by sigma, not level index).

Nothing about a single job can make the tool fail: a job whose ``.hydra/config.yaml`` cannot be
read (corrupt, empty, not a mapping) is skipped, listed with the reason and left out of the
tables, which are built from the other jobs. Exit status 2 with one ``error:`` line: SWEEP_DIR
missing or without a readable job, an output directory that cannot be written (read-only, full).
Standard library, PyYAML/OmegaConf, matplotlib.

Modules: ``jobs`` (reading a sweep), ``analysis`` (settings, best/final, groups), ``report``
(markdown, csv, LaTeX), ``plots``, ``cli`` (the command line).
"""

from .analysis import IGNORE, Comparison, Group, best_and_final, compare, default_metric, varying_keys
from .cli import main
from .jobs import Job, find_jobs, load_job, read_history
from .plots import plot, plot_loss_by_sigma, plot_nfe, plot_search
from .report import main_table, to_latex, to_markdown, write_csv, write_report, write_table_csv

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
    "main_table",
    "plot",
    "plot_loss_by_sigma",
    "plot_nfe",
    "plot_search",
    "read_history",
    "to_latex",
    "to_markdown",
    "varying_keys",
    "write_csv",
    "write_report",
    "write_table_csv",
]
