"""The value checks every layer uses (plain Python: no torch, Lightning or Hydra)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path


def is_int(v) -> bool:
    """An integer, not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def flatten(d, prefix: str = "") -> dict:
    """A nested dict as one level of dotted keys: {"a": {"b": 1}} -> {"a.b": 1}; lists and empty
    dicts stay values."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def unwritable(path, key: str, file: bool = False) -> str | None:
    """Why files cannot be written into the directory ``path`` (named ``key`` in the message), or
    None when they can; ``file``: ``path`` is a file to write, judged by its directory. A directory
    that does not exist yet is judged where it would be created (its nearest existing parent);
    nothing is created. A small probe file is written and removed again, so a read-only or full
    file system is seen before any work."""
    if file and Path(path).is_dir():
        return f"{key}={str(path)!r}: cannot write there (it is a directory)"
    where = Path(path).absolute().parent if file else Path(path).absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        return f"{key}={str(path)!r}: cannot write there ({where} is not a directory)"
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=where)
        try:
            os.write(fd, b"\0" * 4096)  # a full file system refuses data, not always a new name
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        return cannot_write(path, key, e, where)
    return None


def cannot_write(path, key: str, error: OSError, where=None) -> str:
    """The one-line message of ``error``, raised while writing into the directory ``path``."""
    where = where or error.filename or path
    return f"{key}={str(path)!r}: cannot write there ({where}: {error.strerror or error})"
