"""One contract suite, run against every sink and read back from its real backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracking import FanOutSink, InMemorySink, Sink


@dataclass
class Readback:
    """What one backend stored; `None` where the backend does not keep that kind of data."""

    history: Callable[[str], list[tuple[int, float]]]
    params: Callable[[], dict[str, str]] | None = None
    tags: Callable[[], dict[str, str]] | None = None
    status: Callable[[], str] | None = None
    error: Callable[[], str] | None = None


def _memory(tmp_path: Path, start_mlflow_sink: Any) -> tuple[Sink, list[Readback]]:
    sink = InMemorySink()
    return sink, [
        Readback(
            history=sink.history,
            params=lambda: {key: str(value) for key, value in sink.params.items()},
            tags=lambda: sink.tags,
            status=lambda: str(sink.status),
            error=lambda: str(sink.error),
        )
    ]


def _mlflow(tmp_path: Path, start_mlflow_sink: Any) -> tuple[Sink, list[Readback]]:
    from mlflow.tracking import MlflowClient

    sink = start_mlflow_sink()
    client, run_id = MlflowClient(sink.tracking_uri), sink.run_id

    def history(name: str) -> list[tuple[int, float]]:
        metrics = client.get_metric_history(run_id, name)
        return sorted((metric.step, metric.value) for metric in metrics)

    def user_tags() -> dict[str, str]:
        tags = client.get_run(run_id).data.tags
        return {key: value for key, value in tags.items() if not key.startswith("mlflow.")}

    return sink, [
        Readback(
            history=history,
            params=lambda: client.get_run(run_id).data.params,
            tags=user_tags,
            status=lambda: client.get_run(run_id).info.status,
            error=lambda: client.get_run(run_id).data.tags["error"],
        )
    ]


def _tensorboard(tmp_path: Path, start_mlflow_sink: Any) -> tuple[Sink, list[Readback]]:
    from tensorboard.backend.event_processing.event_accumulator import (
        STORE_EVERYTHING_SIZE_GUIDANCE,
        EventAccumulator,
    )

    from tracking import TensorBoardSink

    log_dir = tmp_path / "tb"
    sink = TensorBoardSink(log_dir)

    def reload() -> EventAccumulator:
        return EventAccumulator(str(log_dir), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE).Reload()

    def text(tag: str) -> str:
        return reload().Tensors(tag)[-1].tensor_proto.string_val[0].decode()

    def table(tag: str) -> dict[str, str]:
        rows = [line.strip("|").split("|") for line in text(tag).splitlines()[2:]]
        return {key.strip(): value.strip() for key, value in rows}

    return sink, [
        Readback(
            history=lambda name: [(event.step, event.value) for event in reload().Scalars(name)],
            params=lambda: table("params"),
            tags=lambda: table("tags"),
            error=lambda: text("error"),
        )
    ]


def _fan_out(tmp_path: Path, start_mlflow_sink: Any) -> tuple[Sink, list[Readback]]:
    mlflow_sink, mlflow_readbacks = _mlflow(tmp_path, start_mlflow_sink)
    tensorboard_sink, tensorboard_readbacks = _tensorboard(tmp_path, start_mlflow_sink)
    return FanOutSink([mlflow_sink, tensorboard_sink]), mlflow_readbacks + tensorboard_readbacks


BACKENDS = {"memory": _memory, "mlflow": _mlflow, "tensorboard": _tensorboard, "fanout": _fan_out}


@pytest.fixture(params=list(BACKENDS))
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, start_mlflow_sink: Any
) -> tuple[Sink, list[Readback]]:
    return BACKENDS[request.param](tmp_path, start_mlflow_sink)


# Dyadic fractions are exact in float32, which is what TensorBoard stores.
LOSS = [(step, 2.0 - step * 0.25) for step in range(6)]
ACCURACY = [(step, step * 0.125) for step in range(6)]
VAL_LOSS = [(1, 1.5), (3, 1.0), (5, 0.75)]


def _log_run(sink: Sink) -> None:
    sink.log_params({"learning_rate": 0.001, "batch_size": 32, "optimizer": "adam"})
    sink.set_tags({"model": "mlp", "dataset": "iris"})
    for (step, loss), (_, accuracy) in zip(LOSS, ACCURACY, strict=True):
        # Keras hands over NumPy scalars as often as Python floats.
        sink.log_metrics({"loss": loss, "accuracy": np.float32(accuracy)}, step=step)
        if step % 2 == 1:
            sink.log_metrics({"val_loss": dict(VAL_LOSS)[step]}, step=step)


def test_logged_run_reads_back_exactly(backend: tuple[Sink, list[Readback]]) -> None:
    sink, readbacks = backend
    _log_run(sink)
    sink.flush()
    sink.close()
    for readback in readbacks:
        assert readback.history("loss") == LOSS
        assert readback.history("accuracy") == ACCURACY
        assert readback.history("val_loss") == VAL_LOSS
        if readback.params is not None:
            assert readback.params() == {
                "learning_rate": "0.001",
                "batch_size": "32",
                "optimizer": "adam",
            }
        if readback.tags is not None:
            assert readback.tags() == {"model": "mlp", "dataset": "iris"}
        if readback.status is not None:
            assert readback.status() == "FINISHED"


def test_flush_delivers_metrics_before_close(backend: tuple[Sink, list[Readback]]) -> None:
    sink, readbacks = backend
    for step, loss in LOSS:
        sink.log_metrics({"loss": loss}, step=step)
    sink.flush()
    try:
        for readback in readbacks:
            assert readback.history("loss") == LOSS
    finally:
        sink.close()


@pytest.mark.parametrize("status", ["FAILED", "KILLED"])
def test_unsuccessful_close_records_status_and_error(
    backend: tuple[Sink, list[Readback]], status: Any
) -> None:
    sink, readbacks = backend
    sink.log_metrics({"loss": 1.0}, step=0)
    sink.close(status, error="Traceback (most recent call last):\nValueError: boom")
    for readback in readbacks:
        assert readback.history("loss") == [(0, 1.0)]
        if readback.status is not None:
            assert readback.status() == status
        if readback.error is not None:
            assert "ValueError: boom" in readback.error()


def test_close_is_idempotent(backend: tuple[Sink, list[Readback]]) -> None:
    sink, readbacks = backend
    sink.close("FINISHED")
    sink.close("KILLED", error="second close must not change the run")
    for readback in readbacks:
        if readback.status is not None:
            assert readback.status() == "FINISHED"
        if readback.error is not None:  # the second close's error was not recorded
            try:
                recorded = readback.error()
            except KeyError:
                recorded = None
            assert recorded in (None, "None")


def test_logging_after_close_raises(backend: tuple[Sink, list[Readback]]) -> None:
    sink, _ = backend
    sink.close()
    with pytest.raises(RuntimeError, match="closed"):
        sink.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(RuntimeError, match="closed"):
        sink.log_params({"learning_rate": 0.1})


def test_invalid_status_is_rejected(backend: tuple[Sink, list[Readback]]) -> None:
    sink, _ = backend
    with pytest.raises(ValueError, match="`status` must be one of FINISHED, FAILED, KILLED"):
        sink.close("DONE")  # type: ignore[arg-type]
    sink.close()
