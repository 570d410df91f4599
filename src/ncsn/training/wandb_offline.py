"""Read an offline W&B run back from its transaction log (``wandb/offline-run-*/run-*.wandb``).

Offline runs write no summary or config JSON and W&B has no public API to read them before
``wandb sync``; the ``.wandb`` file is a LevelDB-style log (32 KiB blocks of records with a
7-byte header: CRC32, length, type FULL/FIRST/MIDDLE/LAST) of ``wandb_internal_pb2.Record``
protobufs. The summary records hold what the W&B server will show after a sync (with
``define_metric`` summaries such as ``{"min": ..., "last": ...}`` already applied), so replaying
them gives the run's summary. Used by the tests and handy to check a run before syncing it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes) -> Iterator[bytes]:
    pos, pending = 7, b""  # the file starts with ":W&B" + magic + version (7 bytes)
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # the rest of a block too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if length == 0 and kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        payload = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            yield pending + payload
            pending = b""


def find_run_file(path: str | Path) -> Path:
    """The ``.wandb`` file of a run directory (``<run_dir>/wandb/offline-run-*/``), or ``path`` itself."""
    path = Path(path)
    if path.is_file():
        return path
    files = sorted(path.glob("**/offline-run-*/run-*.wandb")) or sorted(path.glob("**/run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no offline W&B run (wandb/offline-run-*/run-*.wandb) under {path}")
    return files[-1]


def _set(target: dict, item) -> None:
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.setdefault(k, {})
    target[keys[-1]] = json.loads(item.value_json)


def read_offline_run(path: str | Path) -> dict:
    """{"run": {name, group, tags, job_type, notes, project, id}, "summary": {...},
    "metrics": {name: {"summary": [...], "step_metric": ...}}, "history": [rows]}."""
    from wandb.proto import wandb_internal_pb2 as pb

    run: dict = {}
    summary: dict = {}
    metrics: dict = {}
    history: list = []
    for payload in _payloads(find_run_file(path).read_bytes()):
        record = pb.Record()  # type: ignore[attr-defined]  # generated protobuf code
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run = {
                "id": r.run_id,
                "project": r.project,
                "name": r.display_name,
                "group": r.run_group,
                "job_type": r.job_type,
                "notes": r.notes,
                "tags": list(r.tags),
            }
        elif kind == "summary":
            for item in record.summary.update:
                _set(summary, item)
            for item in record.summary.remove:
                keys = list(item.nested_key) or [item.key]
                node = summary
                for k in keys[:-1]:
                    node = node.get(k, {})
                node.pop(keys[-1], None)
        elif kind == "metric":
            m = record.metric
            opts = [f.name for f, v in m.summary.ListFields() if v is True]
            metrics[m.name or m.glob_name] = {"summary": opts, "step_metric": m.step_metric}
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:
                _set(row, item)
            history.append(row)
    return {"run": run, "summary": summary, "metrics": metrics, "history": history}
