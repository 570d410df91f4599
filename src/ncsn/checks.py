"""The value checks every layer uses (plain Python: no torch, Lightning or Hydra)."""

from __future__ import annotations

import math


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
