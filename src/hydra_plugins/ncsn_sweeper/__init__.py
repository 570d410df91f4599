"""The default sweeper of train.py and sample.py (``hydra/sweeper=ncsn_basic``): Hydra's basic
sweeper (comma lists, ``range``, ``sweep=...`` grids), except that ``multirun.yaml`` is written
only once a job has accepted the command (``ncsn.workflow.sweep_jobs``): a refused command
leaves an existing sweep directory's ``multirun.yaml`` as it was; and a sweep two of whose jobs
would share one settings-keyed directory is refused before it starts.

Importing this module (Hydra does, when it loads its plugins) registers the job-key resolver of
``hydra.sweep.subdir`` (conf/hydra/default.yaml)."""

import sys
import time
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobStatus
from hydra.errors import ConfigCompositionException

from ncsn.workflow.sweep_jobs import (
    PENDING,
    RESOLVER,
    drop_pending_record,
    promote_pending_record,
    register_resolver,
    shared_job_dir,
    sweep_summary,
    write_pending_record,
)

register_resolver()


class NcsnBasicSweeper(BasicSweeper):
    """conf/hydra/sweeper/ncsn_basic.yaml; the jobs are composed and launched as by
    ``BasicSweeper.sweep``."""

    def sweep(self, arguments: list[str]) -> Any:
        assert self.hydra_context is not None and self.config is not None and self.launcher is not None  # setup()
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params_conf), self.max_batch_size)
        if RESOLVER in str(self.config.hydra.sweep._get_node("subdir")._value()):  # settings-keyed job dirs
            exclude = self.config.hydra.job.config.override_dirname.exclude_keys
            clash = shared_job_dir([job for batch in self.overrides for job in batch], list(exclude or []))
            if clash:
                raise ConfigCompositionException(f"error: {clash}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        before = set(sweep_dir.iterdir()) if sweep_dir.is_dir() else None
        # train.py's first accepted job renames it over multirun.yaml (sweep_jobs.finished_job)
        write_pending_record(sweep_dir, self.config)
        returns, initial_job_idx, started = [], 0, time.time()
        try:
            while not self.is_done():
                batch = self.get_job_batch()
                self.validate_batch_is_legal(batch)  # composition errors stop the sweep before any job
                # a failed job (bad config, diverged: run_summary.JobFailed) does not stop the others
                returns.append(self.launcher.launch(batch, initial_job_idx=initial_job_idx))
                initial_job_idx += len(batch)
        except BaseException:  # Ctrl-C, SIGTERM (preempted), a bug
            self._forget_refused(sweep_dir, before)
            raise
        failed = all(r.status != JobStatus.COMPLETED for batch in returns for r in batch)
        if failed and (sweep_dir / PENDING).is_file():  # every job refused the command: nothing written
            self._forget_refused(sweep_dir, before)
        else:
            promote_pending_record(sweep_dir)  # jobs that do not call finished_job (sample.py): at the end
        lines, code = sweep_summary(returns, sweep_dir, started)
        print("\n".join(lines), flush=True)
        if code:
            sys.exit(code)
        return returns

    @staticmethod
    def _forget_refused(sweep_dir: Path, before: set | None) -> None:
        drop_pending_record(sweep_dir)  # no job accepted the command: multirun.yaml stays as it was
        for path in set(sweep_dir.iterdir()) - (before or set()):
            _remove_if_empty(path)  # the directory Hydra made for a refused job
        if before is None:
            _remove_if_empty(sweep_dir)


def _remove_if_empty(path: Path) -> None:
    """Remove an empty directory (anything else stays)."""
    try:
        path.rmdir()
    except OSError:
        pass
