"""`TensorBoardSink`: writes scalars and text to TensorBoard event files, without TensorFlow."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from tracking.sink import RunStatus, Sink, check_status
from tracking.tensorboard_internals import fast_checksums

try:
    # The pure-Python writer PyTorch's SummaryWriter uses; it borrows TensorFlow's file
    # system layer when TensorFlow is installed and falls back to its own stub otherwise.
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.compat.proto.types_pb2 import DT_STRING
    from tensorboard.plugins.text.metadata import create_summary_metadata
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
except ImportError as exc:  # pragma: no cover - tensorboard is a declared dependency
    raise ImportError("TensorBoardSink needs TensorBoard: pip install 'tensorboard>=2.21'") from exc

# Events waiting for the writer thread. The writer's default of 10 would make the training
# thread block on disk writes whenever it logs faster than the writer drains.
_MAX_QUEUED_EVENTS = 4096


class TensorBoardSink(Sink):
    """Writes metrics as scalars, and params, tags and errors as text, under `log_dir`.

    Read the scalars back with TensorBoard or
    `EventAccumulator(log_dir).Reload().Scalars(name)`. Artifacts and models are not stored.

    Example:
        sink = TensorBoardSink("runs/trial-3")
        sink.log_metrics({"loss": 0.25}, step=1)
        sink.close()
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, flush_secs: float = 10.0) -> None:
        if flush_secs <= 0:
            raise ValueError(f"`flush_secs` must be > 0. Received: flush_secs={flush_secs}")
        self._log_dir = os.fspath(log_dir)
        self._writer = EventFileWriter(
            self._log_dir, max_queue_size=_MAX_QUEUED_EVENTS, flush_secs=flush_secs
        )
        fast_checksums(self._writer)  # the same bytes, the checksums in C rather than Python
        self._closed = False

    @property
    def log_dir(self) -> str:
        """The directory holding the event files."""
        return self._log_dir

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._check_open()
        self._write_text("params", _markdown_table(params, header=("param", "value")))

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        # Hot path: one event per call holding every metric of the step.
        if self._closed:
            self._check_open()
        values = [
            Summary.Value(tag=name, simple_value=float(value)) for name, value in metrics.items()
        ]
        self._writer.add_event(
            Event(wall_time=time.time(), step=step, summary=Summary(value=values))
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._check_open()
        self._write_text("tags", _markdown_table(tags, header=("tag", "value")))

    def flush(self, *, wait: bool = True) -> None:
        # The writer's own thread writes events as they come; only a waiting flush blocks on it.
        if wait and not self._closed:
            self._writer.flush()

    def close(self, status: RunStatus = "FINISHED", *, error: str | None = None) -> None:
        """Write `error` (if any) as text and close the event file; later calls do nothing."""
        check_status(status)
        if self._closed:
            return
        if error is not None:
            self._write_text("error", f"Run ended with status {status}:\n\n```\n{error}\n```")
        self._closed = True
        self._writer.close()

    def _write_text(self, tag: str, text: str, *, step: int = 0) -> None:
        tensor = TensorProto(
            dtype=DT_STRING, string_val=[text.encode("utf-8")], tensor_shape=TensorShapeProto()
        )
        value = Summary.Value(
            tag=tag,
            tensor=tensor,
            metadata=create_summary_metadata(display_name=tag, description=""),
        )
        self._writer.add_event(
            Event(wall_time=time.time(), step=step, summary=Summary(value=[value]))
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"TensorBoardSink for {self._log_dir!r} is closed; create a new sink to log more."
            )


def _markdown_table(items: Mapping[str, Any], *, header: tuple[str, str]) -> str:
    def cell(value: Any) -> str:
        # A raw "|" would end the cell early.
        return str(value).replace("|", "\\|").replace("\n", " ")

    rows = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    rows += [f"| {cell(key)} | {cell(value)} |" for key, value in items.items()]
    return "\n".join(rows)
