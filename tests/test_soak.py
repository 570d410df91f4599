"""The soak's short version (bench/soak.py --quick): a 3-job DDP multirun (2 CPU processes per
job) receives 6 SIGKILL / SIGTERM / SIGINT at random moments, re-run after each with the same
hydra.sweep.dir, then runs to completion; every job must end with the straight run's weights and
optimizer state, metrics.csv rows unique, in order and equal to the straight run's, one W&B id
per job, results.json finished, no temporary files and no process left behind."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_quick_soak_resumes_every_job_exactly(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "soak: passed" in res.stdout
