"""A checkpoint on disk: one directory, `ckpt-<sequence>`, that verifies itself.

It holds `state.bin` — what `TrainingLoop.capture_state()` returned, keyed by the parts
`harness.state.Parts` names, as plain data (`harness.checkpoints.plain`: a JSON structure and
raw arrays; loading it runs no code) — and `manifest.json`: the format, the sequence, the
step (optimizer updates), epoch and batch it was taken at, the monitored value and the epoch's
metrics, whether retention keeps it for good, the SHA-256 and size of `state.bin`, and the
caller's metadata (the MLflow run id). A checkpoint of the pickled format before is never
loaded (`PickledCheckpoint`).
A directory whose files are missing, truncated or do not match their checksum is a
`DamagedCheckpoint`.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.checkpoints import plain

__all__ = [
    "FORMAT",
    "MANIFEST_FILE",
    "STATE_FILE",
    "CheckpointInfo",
    "DamagedCheckpoint",
    "PickledCheckpoint",
]

NAME = re.compile(r"ckpt-(\d{6,})")
TMP = re.compile(r"\.tmp-ckpt-\d{6,}-\d+")
STATE_FILE, MANIFEST_FILE = "state.bin", "manifest.json"
FORMAT = 2
PICKLED_FORMAT = 1  # before: state.pkl, a pickle, which can run code when it is loaded
MAGIC = b"HARNESS-STATE-2\n"
_ALIGN = 64  # each array starts at a multiple of this, for NumPy's aligned reads


class DamagedCheckpoint(ValueError):
    """A checkpoint whose files are missing, truncated or do not match their checksum."""


class PickledCheckpoint(ValueError):
    """A checkpoint of the pickled format that came before: never loaded, since a pickle
    runs whatever code its bytes name."""


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
    if isinstance(manifest, dict) and manifest.get("format") == PICKLED_FORMAT:
        raise PickledCheckpoint(
            f"{path.name} predates keras-harness's safe checkpoint format: its state is a "
            "pickle, which can run any code when loaded, so it is not loaded. Start the run "
            "again with harness run (or resume it with the keras-harness that wrote it)"
        )
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
    """`state` as the parts of `state.bin`, to write and hash in order.

    Layout: `MAGIC`, the header's length (8 bytes), the header — JSON: the structure, and each
    array's dtype, shape and offset — then each array's raw bytes at its offset. The arrays'
    buffers are handed over, not copied, and writing and hashing them release the GIL.

    Raises:
        NotPlainData: the state holds something other than plain data.
    """
    structure, arrays = plain.encode(state)
    specs, layout, offset = [], [], 0
    for array in arrays:
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        offset += -offset % _ALIGN
        specs.append({"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})
        layout.append((offset, array))
        offset += array.nbytes
    header = json.dumps({"tree": structure, "arrays": specs}, allow_nan=False).encode()
    header += b" " * (-(len(MAGIC) + 8 + len(header)) % _ALIGN)  # the arrays start aligned
    parts: list[Any] = [MAGIC, struct.pack("<Q", len(header)), header]
    position = 0
    for at, array in layout:
        if at > position:
            parts.append(bytes(at - position))
        parts.append(array.reshape(-1).view(np.uint8).data if array.size else b"")
        position = at + array.nbytes
    return parts


def deserialise(payload: bytearray) -> dict[str, Any]:
    """The state `serialise` wrote, its arrays views of `payload` (writable, no copy).

    Raises:
        DamagedCheckpoint: the bytes are not such a state, or name what plain data cannot be.
    """
    view = memoryview(payload)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise DamagedCheckpoint(f"{STATE_FILE} is not a checkpoint state")
    try:
        (size,) = struct.unpack_from("<Q", view, len(MAGIC))
        start = len(MAGIC) + 8
        header = json.loads(bytes(view[start : start + size]))
        base = start + size
        arrays = []
        for spec in header["arrays"]:
            dtype = plain.checked_dtype(spec["dtype"])
            shape = tuple(int(d) for d in spec["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            arrays.append(
                np.frombuffer(view, dtype, count, base + int(spec["offset"])).reshape(shape)
            )
        return dict(plain.decode(header["tree"], arrays))
    except (ValueError, KeyError, TypeError, struct.error) as error:
        raise DamagedCheckpoint(f"{STATE_FILE} is not a valid checkpoint state ({error})") from None


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
