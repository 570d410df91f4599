"""The golden and parity tests pass on every CPU code path this machine has, not only the one
the libraries pick by themselves.

PyTorch chooses its vectorised kernels by ``ATEN_CPU_CAPABILITY`` (default, avx2, avx512 on
x86-64) and Intel MKL (x86-64 only) its code branch by ``MKL_CBWR`` (COMPATIBLE, SSE4_2, AVX,
AVX2, AVX512): each choice rounds the last bits differently, which is what made a bit-exact
comparison with a recording fail on an AVX-512 Intel machine while it passed on an AVX2 AMD one.
Each supported value runs the parity tests once in a fresh interpreter (values are paired up, so
every value of both variables is used at least once: max(#capabilities, #branches) runs).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARITY_TESTS = [
    "tests/test_golden.py",
    "tests/test_samplers.py::test_refactor_kept_the_generator_path",
    "tests/test_samplers.py::test_generator_path_equals_the_plain_loops_bit_for_bit",
    "tests/test_samplers.py::test_samples_do_not_depend_on_batch_size_or_ranks",
    "tests/test_reference_checkpoints.py::test_converted_network_output_equals_the_reference_forward",
    "tests/test_sigmas_loss.py",
]


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def code_paths(flags: set[str], machine: str) -> tuple[list[str], list[str]]:
    """(ATEN_CPU_CAPABILITY values, MKL_CBWR branches) this processor can run."""
    if machine.lower() not in ("x86_64", "amd64"):
        return ["default"], []  # ARM and others: one ATen path we can force, and no MKL
    caps, branches = ["default"], ["COMPATIBLE"]
    if "sse4_2" in flags:
        branches.append("SSE4_2")
    if "avx" in flags:
        branches.append("AVX")
    if "avx2" in flags:
        caps.append("avx2")
        branches.append("AVX2")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        caps.append("avx512")
        branches.append("AVX512")
    return caps, branches


def test_code_paths_follow_the_cpu_flags():
    caps, branches = code_paths({"sse4_2", "avx", "avx2"}, "x86_64")
    assert caps == ["default", "avx2"] and branches == ["COMPATIBLE", "SSE4_2", "AVX", "AVX2"]
    caps, branches = code_paths({"sse4_2", "avx", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"}, "x86_64")
    assert caps[-1] == "avx512" and branches[-1] == "AVX512"
    assert code_paths({"avx2"}, "aarch64") == (["default"], [])


def _runs() -> list[tuple[str | None, str | None]]:
    caps, branches = code_paths(_cpu_flags(), platform.machine())
    n = max(len(caps), len(branches))
    return [(caps[i] if i < len(caps) else None, branches[i] if i < len(branches) else None) for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("capability, branch", _runs())
def test_parity_tests_pass_on_this_code_path(capability, branch):
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    if capability is not None:
        env["ATEN_CPU_CAPABILITY"] = capability
    if branch is not None:
        env["MKL_CBWR"] = branch
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *PARITY_TESTS]
    seen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    if capability is not None:  # the variable was honoured (a typo would silently do nothing)
        assert seen.stdout.strip().lower() == capability.lower(), seen.stdout
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"ATEN_CPU_CAPABILITY={capability} MKL_CBWR={branch}\n{proc.stdout[-3000:]}"
    assert " passed" in proc.stdout and "failed" not in proc.stdout
