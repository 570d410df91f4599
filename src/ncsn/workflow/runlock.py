"""One writer per run directory: ``run_dir/run.lock``.

The training process that writes a run directory (rank 0, the process that launches the other
DDP ranks) holds an exclusive lock on ``run_dir/run.lock`` for the whole run; the file names the
holder (pid, host, start time). A second ``train.py`` on the same directory stops at once with a
one-line ``error:`` naming the holder (exit 2). The lock is released on every exit path (normal
end, error, SIGTERM, Ctrl-C: ``release`` in a ``finally``); a process killed with SIGKILL cannot
release it, but the kernel drops its ``flock``, and the next process takes the stale lock over
(logged). Where the filesystem offers no ``flock`` (some network filesystems), the pid and host
recorded in the file decide: a lock of a dead process on the same host is stale; a lock held on
another host is refused (remove the file by hand once that run is gone). A run directory that
cannot be created or written (read-only, full) is refused with one ``error:`` line (exit 2).

The holder then removes the temporary files that writers killed mid-write left behind
(``remove_stale_temp_files``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import time
from pathlib import Path

from .config import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {when})"


class RunLock:
    """``RunLock(run_dir).acquire()`` ... ``release()``; a context manager too."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None
        self.made_dir = False  # the directory was created by acquire: release removes it when empty

    def acquire(self) -> RunLock:
        try:
            return self._acquire()
        except OSError as e:  # read-only, full, not a directory, no permission
            self.release()
            raise ConfigError(
                f"run directory {self.path.parent} is not writable ({e.strerror or e}: "
                f"{e.filename or self.path}); use another hydra.run.dir"
            ) from None

    def _acquire(self) -> RunLock:
        if not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.made_dir = True
        for _ in range(10):  # retried only when the file was replaced between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                have_flock = self._flock(fd)
                holder = self._read(fd)
                if not have_flock and holder and self._alive_elsewhere(holder):
                    raise self._refusal(holder)
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                    os.close(fd)  # the holder released (unlinked) it meanwhile: lock the new file
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            if holder and holder.get("pid") != os.getpid():
                log.warning("run directory %s: took over a stale lock of %s", self.path.parent, _describe(holder))
            self.fd = fd  # held from here: release() drops it on any failure below
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)  # a full disk fails here, before anything else of the run is written
            return self
        raise ConfigError(f"run directory {self.path.parent}: could not take {self.path} (it keeps changing)")

    def _flock(self, fd: int) -> bool:
        """True when the kernel lock is held now; False when the filesystem has no flock. Raises the
        refusal when another process holds it."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._refusal(self._read(fd)) from None
            return False  # ENOLCK, EINVAL, ENOSYS: no flock here; the recorded pid and host decide

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            return json.loads(data) if data else {}
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _alive_elsewhere(holder: dict) -> bool:
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            return False
        if holder.get("host") != socket.gethostname():
            return True  # cannot tell: refuse
        return isinstance(holder.get("pid"), int) and pid_alive(holder["pid"])

    def _refusal(self, holder: dict) -> ConfigError:
        who = _describe(holder) if holder else "another process"
        return ConfigError(
            f"run directory {self.path.parent} is in use by {who} ({self.path}); "
            "wait for it to end, or use another hydra.run.dir"
        )

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)  # closing drops the flock
            self.fd = None
        if self.made_dir:
            try:
                self.path.parent.rmdir()  # only when empty: a refused run leaves no directory
            except OSError:
                pass
            self.made_dir = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


#: ``.<name>.tmp<pid>``: the temporary file of an atomic write (checkpoints, config, results, metrics)
_TEMP = re.compile(r"^\..+\.tmp(\d+)$")


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Remove the temporary files of atomic writes that a process killed mid-write left in the run
    directory, its ``checkpoints/`` and ``.hydra/`` (a checkpoint's worth of disk each): those
    whose writer (the pid in the name) is dead, or is this process (which has written nothing
    yet). Call with the run lock held. Returns the removed paths."""
    removed = []
    for folder in (run_dir, run_dir / "checkpoints", run_dir / ".hydra"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = _TEMP.match(name)
            if not match or (int(match[1]) != os.getpid() and pid_alive(int(match[1]))):
                continue
            try:
                (folder / name).unlink()
                removed.append(folder / name)
            except OSError:
                pass
    if removed:
        log.info("removed %d temporary file(s) left by killed writers: %s", len(removed), ", ".join(map(str, removed)))
    return removed
