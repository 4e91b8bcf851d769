"""TensorBoardSink specifics: text summaries, and no-op artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tracking import TensorBoardSink


def _text(log_dir: Path, tag: str) -> str:
    events = EventAccumulator(str(log_dir)).Reload().Tensors(tag)
    return events[-1].tensor_proto.string_val[0].decode()


def test_params_are_a_markdown_table_in_the_text_plugin(tmp_path: Path) -> None:
    sink = TensorBoardSink(tmp_path)
    sink.log_params({"layers": "64|32", "lr": 0.001})
    sink.close()
    assert _text(tmp_path, "params") == (
        "| param | value |\n|---|---|\n| layers | 64\\|32 |\n| lr | 0.001 |"
    )
    metadata = EventAccumulator(str(tmp_path)).Reload().SummaryMetadata("params")
    assert metadata.plugin_data.plugin_name == "text"


def test_artifacts_and_models_are_ignored(tmp_path: Path) -> None:
    sink = TensorBoardSink(tmp_path / "tb")
    sink.log_artifact(tmp_path / "does-not-matter.txt")  # not even read
    sink.log_model(object())
    sink.log_metrics({"loss": 0.5}, step=3)
    sink.close()
    assert [p.name.startswith("events.out.tfevents.") for p in (tmp_path / "tb").iterdir()] == [
        True
    ]
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [(event.step, event.value) for event in events.Scalars("loss")] == [(3, 0.5)]
    tags = events.Tags()
    assert tags["scalars"] == ["loss"]  # the metric, and nothing of the artifact or the model
    assert tags["tensors"] == [] and tags["images"] == [] and tags["graph"] is False


@pytest.mark.door("tensorboard", "tracking/tensorboard_internals.py")
def test_checksums_in_c_write_the_bytes_tensorboard_writes(tmp_path: Path) -> None:
    import os

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as slow
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from tracking.tensorboard_internals import fast_checksums, masked_crc32c

    for data in (b"", b"\x00" * 8, os.urandom(157), os.urandom(4096)):
        assert masked_crc32c(data) == slow(data)
    # The same events through a writer as TensorBoard makes it and one with fast checksums.
    files = []
    for name, fast in (("plain", False), ("fast", True)):
        writer = EventFileWriter(str(tmp_path / name))
        if fast:
            assert fast_checksums(writer)
        for step in range(3):
            writer.add_event(_event(step))
        writer.close()
        (path,) = (tmp_path / name).iterdir()
        files.append(path.read_bytes())
    plain, fast = files
    assert len(_records(plain)) == 4  # the file version, then the three events
    assert _records(plain)[1:] == _records(fast)[1:]  # the same records, checksums included
    events = EventAccumulator(str(tmp_path / "fast")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 0.5), (1, 0.5), (2, 0.5)]


def _event(step: int) -> Any:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    value = Summary.Value(tag="loss", simple_value=0.5)
    return Event(wall_time=1.0, step=step, summary=Summary(value=[value]))


def _records(data: bytes) -> list[bytes]:
    """Each whole record (length, its checksum, the event, its checksum) of an event file."""
    import struct

    records, at = [], 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        records.append(data[at : at + 16 + length])
        at += 16 + length
    return records
