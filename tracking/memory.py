"""`InMemorySink`: records everything in plain Python containers, for tests."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tracking.dataset import DatasetRecord
from tracking.sink import RunStatus, Sink, check_status


class InMemorySink(Sink):
    """Records every call so tests can assert on what a run logged.

    Example:
        sink = InMemorySink()
        sink.log_metrics({"loss": 0.5}, step=1)
        assert sink.history("loss") == [(1, 0.5)]
    """

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[str, float, int]] = []
        self.tags: dict[str, str] = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.models: list[Any] = []
        self.model_logs: list[dict[str, Any]] = []
        self.datasets: list[DatasetRecord] = []
        self.flush_count = 0
        self.flush_waits: list[bool] = []
        self.close_count = 0
        self.status: RunStatus | None = None
        self.error: str | None = None

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        return self.status is not None

    def history(self, name: str) -> list[tuple[int, float]]:
        """Return `(step, value)` pairs logged for metric `name`, in logging order."""
        return [(step, value) for key, value, step in self.metrics if key == name]

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._check_open()
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        self._check_open()
        self.metrics.extend((name, float(value), step) for name, value in metrics.items())

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._check_open()
        self.tags.update({key: str(value) for key, value in tags.items()})

    def log_artifact(
        self, local_path: str | os.PathLike[str], *, artifact_path: str | None = None
    ) -> None:
        self._check_open()
        self.artifacts.append((os.fspath(local_path), artifact_path))

    def log_model(
        self,
        model: Any,
        *,
        name: str = "model",
        input_example: Any | None = None,
        step: int = 0,
        metrics: Mapping[str, float] | None = None,
    ) -> str | None:
        self._check_open()
        self.models.append(model)
        self.model_logs.append(
            {"name": name, "step": step, "metrics": dict(metrics or {}), "model": model}
        )
        return None

    def log_dataset(self, dataset: DatasetRecord) -> None:
        self._check_open()
        self.datasets.append(dataset)

    def flush(self, *, wait: bool = True) -> None:
        self.flush_count += 1
        self.flush_waits.append(wait)

    def close(self, status: RunStatus = "FINISHED", *, error: str | None = None) -> None:
        """Record the final status; like the real sinks, a second call changes nothing."""
        check_status(status)
        self.close_count += 1
        if self.closed:
            return
        self.status = status
        self.error = error

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("InMemorySink is closed; create a new sink for a new run.")
