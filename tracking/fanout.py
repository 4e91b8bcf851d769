"""`FanOutSink`: forwards every call to several sinks."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tracking.dataset import DatasetRecord
from tracking.sink import RunStatus, Sink


class FanOutSink(Sink):
    """Forwards each call to every sink; one sink failing does not starve the others.

    If any sink raises, the remaining sinks are still called and the first error is
    re-raised afterwards, with the later ones attached as notes.

    Example:
        sink = FanOutSink([MlflowSink.start(uri, experiment="mnist"), TensorBoardSink("runs/1")])
        sink.log_metrics({"loss": 0.5}, step=1)
        sink.close()
    """

    def __init__(self, sinks: Sequence[Sink]) -> None:
        for sink in sinks:
            if not isinstance(sink, Sink):
                raise TypeError(f"`sinks` must contain only `Sink` instances. Received: {sink!r}")
        self._sinks = tuple(sinks)

    @property
    def sinks(self) -> tuple[Sink, ...]:
        """The sinks calls are forwarded to, in order."""
        return self._sinks

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._each(lambda sink: sink.log_params(params))

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        self._each(lambda sink: sink.log_metrics(metrics, step=step))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._each(lambda sink: sink.set_tags(tags))

    def log_artifact(
        self, local_path: str | os.PathLike[str], *, artifact_path: str | None = None
    ) -> None:
        self._each(lambda sink: sink.log_artifact(local_path, artifact_path=artifact_path))

    def log_model(
        self,
        model: Any,
        *,
        name: str = "model",
        input_example: Any | None = None,
        step: int = 0,
        metrics: Mapping[str, float] | None = None,
    ) -> str | None:
        """Every sink stores the model; the first model id a sink returns."""
        ids: list[str | None] = []
        self._each(
            lambda sink: ids.append(
                sink.log_model(
                    model, name=name, input_example=input_example, step=step, metrics=metrics
                )
            )
        )
        return next((model_id for model_id in ids if model_id), None)

    def log_dataset(self, dataset: DatasetRecord) -> None:
        self._each(lambda sink: sink.log_dataset(dataset))

    def flush(self, *, wait: bool = True) -> None:
        self._each(lambda sink: sink.flush(wait=wait))

    def close(self, status: RunStatus = "FINISHED", *, error: str | None = None) -> None:
        self._each(lambda sink: sink.close(status, error=error))

    def _each(self, call: Callable[[Sink], None]) -> None:
        first: Exception | None = None
        for sink in self._sinks:
            try:
                call(sink)
            except Exception as exc:
                if first is None:
                    first = exc
                else:
                    first.add_note(f"{type(sink).__name__} also failed: {exc!r}")
        if first is not None:
            raise first
