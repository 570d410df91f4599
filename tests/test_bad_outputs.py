"""Outputs that cannot be written and inputs that are not what they claim to be, through the
command lines: sample.py, ``python -m ncsn.compare`` and ``python -m ncsn.workflow.convert`` refuse a
read-only or full output directory with one ``error:`` line (exit 2) and leave nothing behind; a
file of random bytes is "not a checkpoint"; a refused sample.py leaves no run directory.

Read-only: a directory of mode 555 (as root, the command runs without CAP_DAC_OVERRIDE, so the
mode bits hold for it too). Full: a tiny tmpfs mounted in a user + mount namespace
(``unshare -Urm``); skipped where the machine allows neither.
"""

import ctypes
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from ncsn.workflow.checkpoints import load_weights_only
from ncsn.workflow.config import ConfigError

LISTING = "@@ listing of the full file system @@"


def _drop_dac_override():
    """preexec_fn: without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (prctl PR_CAPBSET_DROP before the
    exec) root obeys permission bits."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _full_fs(mount_point, size: str, fill: bool) -> list[str]:
    """A command prefix: run the command with a ``size`` tmpfs on ``mount_point`` (filled up first
    when ``fill``), then print LISTING and what the tmpfs holds (it vanishes with the namespace)."""
    script = (
        'mount -t tmpfs -o size="$1" tmpfs "$0" || exit 97; '
        + ('head -c 1048576 /dev/zero > "$0/.fill" 2>/dev/null; ' if fill else "")
        + f'shift; "$@"; rc=$?; echo "{LISTING}"; cd "$0" && find . -mindepth 1 ! -name .fill | sort; exit $rc'
    )
    return ["unshare", "-Urm", "sh", "-c", script, str(mount_point), size]


def cli(*argv, read_only: bool = False, full=None, cwd=ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python *argv`` (a script name: the repository's) in ``cwd``; ``read_only``: without root's
    permission override; ``full``: (mount point, size, fill) for ``_full_fs``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", HYDRA_FULL_ERROR="0")
    env.pop("NCSN_OUTPUT_DIR", None)
    prefix = _full_fs(*full) if full else []
    preexec = _drop_dac_override if read_only and os.geteuid() == 0 else None
    argv = [str(ROOT / a) if str(a).endswith(".py") and (ROOT / a).is_file() else str(a) for a in argv]
    return subprocess.run(
        [*prefix, sys.executable, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )


def one_error_line(res, *parts) -> str:
    """The command exited 2 with exactly one line on stderr, ``error: ...`` naming ``parts``."""
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-3000:]
    for part in parts:
        assert str(part) in lines[0], (part, lines[0])
    return lines[0]


def full_listing(res) -> list[str]:
    """What the tmpfs held when the command ended (without the fill file)."""
    return res.stdout.split(LISTING, 1)[1].split()


@pytest.fixture(scope="module")
def can_read_only(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe") / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        res = cli("-c", f"open({str(d / 'x')!r}, 'w')", read_only=True)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot drop root's permission override here: {e}")
    finally:
        d.chmod(0o755)
    if res.returncode == 0:
        pytest.skip("a mode-555 directory is writable here")


@pytest.fixture(scope="module")
def can_fill(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe_full")
    try:
        res = cli("-c", f"open({str(d / 'x')!r}, 'wb').write(bytes(8192))", full=(d, "16k", True))
    except OSError as e:
        pytest.skip(f"no unshare here: {e}")
    if "No space left" not in res.stderr:
        pytest.skip(f"no tmpfs in a user namespace here: {res.stderr.strip()[-300:]}")


@pytest.fixture
def read_only(tmp_path, can_read_only):
    d = tmp_path / "read_only"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)


def tree(path) -> dict:
    """{relative path: bytes (None for a folder)} of everything below ``path``."""
    return {str(p.relative_to(path)): (None if p.is_dir() else p.read_bytes()) for p in sorted(path.rglob("*"))}


# -- checkpoints: bytes that are not one ---------------------------------------------------------------
class Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_bytes_that_are_no_checkpoint_are_named_so_and_pickles_with_code_are_refused(tmp_path):
    files = {
        "random.ckpt": torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).byte().numpy(),
        "latin1.ckpt": "Grüße, café\n".encode("latin-1"),  # not UTF-8
        "notes.ckpt": b"hello: world\n",
        "empty.ckpt": b"",
        "pickle-opcodes.ckpt": b"\x80\x02garbage that is no pickle",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(bytes(data))
        with pytest.raises(ConfigError) as err:
            load_weights_only(tmp_path / name)
        message = str(err.value)
        assert "not a checkpoint" in message and str(tmp_path / name) in message, message
        assert "run code" not in message and "\n" not in message
    for legacy in (False, True):  # a real pickle whose global would run code: refused, never run
        evil = tmp_path / f"evil{legacy}.ckpt"
        torch.save({"state_dict": {}, "x": Payload()}, evil, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(ConfigError, match=r"holds objects that would run code when loaded\): .*GLOBAL .*system"):
            load_weights_only(evil)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, good)
    data = good.read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="unreadable or truncated checkpoint"):
        load_weights_only(tmp_path / "truncated.ckpt")
    assert torch.equal(load_weights_only(good)["state_dict"]["w"], torch.ones(2))


def test_sample_py_says_random_bytes_are_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(bytes(torch.randint(0, 256, (2048,), generator=torch.Generator().manual_seed(1)).byte()))
    run = tmp_path / "run"
    res = cli("sample.py", f"ckpt_path={junk}", f"hydra.run.dir={run}")
    line = one_error_line(res, "not a checkpoint", junk)
    assert "run code" not in line and "Traceback" not in res.stderr
    assert not run.exists()


# -- sample.py -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory):
    """A 2-step toy_gmm checkpoint (2-D data: mode=fid cannot take it)."""
    run = tmp_path_factory.mktemp("toy") / "run"
    res = cli(
        "train.py",
        "experiment=toy_gmm",
        "trainer.max_steps=2",
        "callbacks.samples.every_n_epochs=1000",
        "sampler.n_samples=8",
        "sampler.n_steps_each=1",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.run.dir={run}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return run / "checkpoints" / "last.ckpt"


def _sample(ckpt, run, *overrides, **kw):
    run = [f"hydra.run.dir={run}"] if run else []  # None: Hydra's default, outputs/sample/<date>/<time>
    return cli("sample.py", f"ckpt_path={ckpt}", "sampler.n_samples=4", *run, *overrides, **kw)


def test_sample_py_run_directory_that_cannot_be_made_one_line_nothing_written(read_only, can_fill, tmp_path):
    """Hydra's run (or sweep) directory below a read-only or full parent: refused before Hydra
    tries to make it (a RunDirCheck callback), in one line."""
    ckpt = tmp_path / "any.ckpt"  # never read: the directory is refused first
    for args in ([f"hydra.run.dir={read_only / 'run'}"], ["-m", "seed=1,2", f"hydra.sweep.dir={read_only / 'sw'}"]):
        res = cli("sample.py", *args, f"ckpt_path={ckpt}", read_only=True)
        one_error_line(res, f"{args[-1].split('=')[0]}='{read_only}{os.sep}", "Permission denied")
        assert list(read_only.iterdir()) == []
    mount = tmp_path / "disk"
    mount.mkdir()
    res = cli("sample.py", f"ckpt_path={ckpt}", f"hydra.run.dir={mount / 'run'}", full=(mount, "16k", True))
    one_error_line(res, f"hydra.run.dir='{mount / 'run'}'", "No space left on device")
    assert full_listing(res) == []


@pytest.mark.slow
def test_sample_py_read_only_out_dir_one_line_nothing_written(toy_ckpt, read_only, tmp_path):
    run = tmp_path / "run"
    for out_dir in (read_only, read_only / "new"):
        res = _sample(toy_ckpt, run, f"out_dir={out_dir}", read_only=True)
        one_error_line(res, f"out_dir='{out_dir}'", "Permission denied")
        assert "Traceback" not in res.stderr
        assert not run.exists() and list(read_only.iterdir()) == []  # not even sample.log


@pytest.mark.slow
@pytest.mark.parametrize("fill", [True, False], ids=["full-at-start", "full-while-writing"])
def test_sample_py_full_out_dir_one_line_nothing_written(toy_ckpt, can_fill, fill, tmp_path):
    mount, run = tmp_path / "disk", tmp_path / "run"
    mount.mkdir()
    # 16 kB: the start-up check's 4 kB probe fits, the record and the samples do not
    res = _sample(toy_ckpt, run, f"out_dir={mount / 'out'}", full=(mount, "16k", fill))
    one_error_line(res, f"out_dir='{mount / 'out'}'", "No space left on device")
    assert "Traceback" not in res.stderr
    assert full_listing(res) == [] and not run.exists()


@pytest.mark.slow
def test_refused_sample_py_leaves_no_run_directory_and_an_earlier_run_intact(toy_ckpt, tmp_path):
    res = _sample(toy_ckpt, None, "mode=fid", cwd=tmp_path)
    one_error_line(res, "mode='fid' needs image data")
    assert list(tmp_path.iterdir()) == []  # no outputs/sample/<date>/<time>
    # a run directory that holds an earlier run: refused there, every file of it as it was
    run = tmp_path / "run"
    assert _sample(toy_ckpt, run).returncode == 0
    before = tree(run)
    one_error_line(_sample(toy_ckpt, run, "mode=fid", "seed=3"), "mode='fid'")
    after = tree(run)
    after.pop("sample.log"), before.pop("sample.log", None)  # Hydra's job log: the error line is added there
    assert after == before and ".hydra/config.yaml" in after


# -- python -m ncsn.compare ------------------------------------------------------------------------------
def _sweep(root):
    """Two finished fake jobs (no training): enough for a report with a plot."""
    for i, n in enumerate((3, 5)):
        job = root / str(i)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text(f"seed: 0\nsigmas:\n  num_scales: {n}\n")
        (job / "results.json").write_text(f'{{"status": "finished", "fid": {10.0 + i}}}')
    return root


def test_compare_read_only_report_directory_one_line_nothing_written(read_only, tmp_path):
    sweep = _sweep(tmp_path / "sweep")
    before = tree(sweep)
    res = cli("-m", "ncsn.compare", sweep, "--out", read_only / "report", read_only=True)
    one_error_line(res, f"--out='{read_only / 'report'}'", "Permission denied")
    assert list(read_only.iterdir()) == [] and res.stdout == ""
    sweep.chmod(0o555)  # the default report directory is the sweep itself
    try:
        res = cli("-m", "ncsn.compare", sweep, read_only=True)
    finally:
        sweep.chmod(0o755)
    one_error_line(res, f"SWEEP_DIR='{sweep}'", "Permission denied", "--out DIR")
    assert tree(sweep) == before


@pytest.mark.parametrize("fill", [True, False], ids=["full-at-start", "full-while-writing"])
def test_compare_full_report_directory_one_line_nothing_written(can_fill, fill, tmp_path):
    sweep, mount = _sweep(tmp_path / "sweep"), tmp_path / "disk"
    mount.mkdir()
    out = mount / "report" if fill else mount  # a new report directory; one that exists
    res = cli("-m", "ncsn.compare", sweep, "--out", out, full=(mount, "16k", fill))
    one_error_line(res, f"--out='{out}'", "No space left on device")
    assert full_listing(res) == []  # no report, no staging folder, no new report directory


# -- python -m ncsn.workflow.convert ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ncsnv2_release(tmp_path_factory):
    from test_reference_checkpoints import write_reference

    return write_reference(tmp_path_factory.mktemp("release"), "ncsnv2", 8, 4, "tiny")[:2]


def test_convert_read_only_output_one_line_nothing_written(ncsnv2_release, read_only):
    ckpt, yml = ncsnv2_release
    res = cli("-m", "ncsn.workflow.convert", ckpt, yml, read_only / "out.ckpt", read_only=True)
    one_error_line(res, f"OUT.ckpt='{read_only / 'out.ckpt'}'", "Permission denied")
    assert list(read_only.iterdir()) == [] and res.stdout == ""


@pytest.mark.parametrize("fill", [True, False], ids=["full-at-start", "full-while-writing"])
def test_convert_full_output_one_line_nothing_written(ncsnv2_release, can_fill, fill, tmp_path):
    ckpt, yml = ncsnv2_release
    mount = tmp_path / "disk"
    mount.mkdir()
    # 64 kB: the start-up probe fits, the 1 MB checkpoint does not
    res = cli("-m", "ncsn.workflow.convert", ckpt, yml, mount / "out.ckpt", full=(mount, "64k", fill))
    one_error_line(res, f"{mount / 'out.ckpt'}", "No space left on device")
    assert full_listing(res) == []  # no half-written checkpoint, no temporary file
