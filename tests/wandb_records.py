"""Read back what W&B recorded offline: the records of ``run-<id>.wandb`` (LevelDB log format of protobufs)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunks(data: bytes) -> Iterator[bytes]:
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, "not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer too short for a header: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """{"run": {id, group, name, job_type, tags}, "config": {key: value}, "history": [{key: value}],
    "exit_code": int | None, "preempting": bool, "artifacts": [{name, type, files}]} of one ``offline-run-*``
    folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = Path(run_dir).glob("run-*.wandb")
    out: dict[str, Any] = {"run": {}, "config": {}, "history": [], "exit_code": None, "preempting": False,
                           "artifacts": []}
    for chunk in _chunks(log_file.read_bytes()):
        record = pb.Record()
        record.ParseFromString(chunk)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            out["run"] = {"id": r.run_id, "group": r.run_group, "name": r.display_name, "job_type": r.job_type,
                          "tags": list(r.tags)}
            out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in record.history.item})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
        elif kind == "preempting":
            out["preempting"] = True
        elif kind == "artifact":
            out["artifacts"].append({"name": record.artifact.name, "type": record.artifact.type,
                                     "files": [m.path for m in record.artifact.manifest.contents]})
    return out
