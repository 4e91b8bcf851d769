"""A checkpoint on disk: one directory, `ckpt-<sequence>`, that verifies itself.

It holds `state.pkl` — what `TrainingLoop.capture_state()` returned (plain Python and NumPy,
keyed by the parts `harness.state.Parts` names), pickled with the arrays out of band — and
`manifest.json`: the format, the sequence, the step (optimizer updates), epoch and batch it
was taken at, the monitored value and the epoch's metrics, whether retention keeps it for
good, the SHA-256 and size of `state.pkl`, and the caller's metadata (the MLflow run id).
A directory whose files are missing, truncated or do not match their checksum is a
`DamagedCheckpoint`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CheckpointInfo", "DamagedCheckpoint", "FORMAT", "MANIFEST_FILE", "STATE_FILE"]

NAME = re.compile(r"ckpt-(\d{6,})")
TMP = re.compile(r"\.tmp-ckpt-\d{6,}-\d+")
STATE_FILE, MANIFEST_FILE = "state.pkl", "manifest.json"
FORMAT = 1
MAGIC = b"HARNESS-STATE-1\n"


class DamagedCheckpoint(ValueError):
    """A checkpoint whose files are missing, truncated or do not match their checksum."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's manifest says about it."""

    path: Path
    sequence: int
    step: int  # optimizer updates
    epoch: int  # the epoch in progress (counted from 0), or the next after an epoch end
    batch: int  # batches of that epoch already trained
    epoch_end: bool
    monitor: float | None
    permanent: bool
    saved_at: float
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # the epoch's, at an epoch end


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as error:
        raise DamagedCheckpoint(f"{path.name}: {MANIFEST_FILE} unreadable ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DamagedCheckpoint(f"{path.name}: {MANIFEST_FILE} is not a checkpoint manifest")
    return manifest


def info_of(path: Path, manifest: dict[str, Any]) -> CheckpointInfo:
    try:
        return CheckpointInfo(
            path=path,
            sequence=int(manifest["sequence"]),
            step=int(manifest["step"]),
            epoch=int(manifest["epoch"]),
            batch=int(manifest["batch"]),
            epoch_end=bool(manifest["epoch_end"]),
            monitor=manifest["monitor"],
            permanent=bool(manifest["permanent"]),
            saved_at=float(manifest["saved_at"]),
            metadata=dict(manifest.get("metadata") or {}),
            metrics=dict(manifest.get("metrics") or {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DamagedCheckpoint(f"{path.name}: {MANIFEST_FILE} lacks {error}") from None


def serialise(state: dict[str, Any]) -> list[Any]:
    """`state` as bytes to write: a pickle whose large arrays stay out of band.

    Pickle protocol 5 hands the NumPy arrays' buffers over instead of copying them into the
    pickle, and writing and hashing those buffers release the GIL: the training thread is not
    held up by the writer thread copying a large model into one bytes object.
    Layout: `MAGIC`, the number of buffers and the pickle's length (8 bytes each), the pickle,
    then each buffer's length and bytes.
    """
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(state, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    parts: list[Any] = [MAGIC, struct.pack("<QQ", len(raws), len(head)), head]
    for raw in raws:
        parts += [struct.pack("<Q", raw.nbytes), raw]
    return parts


def deserialise(payload: bytearray) -> dict[str, Any]:
    view = memoryview(payload)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise DamagedCheckpoint(f"{STATE_FILE} is not a checkpoint state")
    offset = len(MAGIC)
    count, head_size = struct.unpack_from("<QQ", view, offset)
    offset += 16
    head = view[offset : offset + head_size]
    offset += head_size
    buffers = []
    for _ in range(count):
        (size,) = struct.unpack_from("<Q", view, offset)
        offset += 8
        buffers.append(view[offset : offset + size])
        offset += size
    return dict(pickle.loads(head, buffers=buffers))


def write_synced(path: Path, payload: bytes | list[Any]) -> None:
    with open(path, "wb") as file:
        for part in [payload] if isinstance(payload, bytes) else payload:
            file.write(part)
        file.flush()
        os.fsync(file.fileno())


def fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
