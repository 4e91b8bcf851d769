"""TensorBoardSink specifics: text summaries, and no-op artifacts."""

from __future__ import annotations

from pathlib import Path

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
