"""The `Sink` interface: where a run's params, metrics, tags and artifacts go."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from tracking.dataset import DatasetRecord

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]
RUN_STATUSES: tuple[RunStatus, ...] = ("FINISHED", "FAILED", "KILLED")


class Sink:
    """Where a run's params, metrics, tags and artifacts go. Every method defaults to a no-op.

    Subclasses override only what their backend supports, the way a Keras `Callback`
    overrides only the `on_*` hooks it needs.

    Example:
        class PrintSink(Sink):
            def log_metrics(self, metrics, *, step):
                print(step, dict(metrics))
    """

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the run's hyperparameters (logged once, near the start)."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Record metric values at `step`; called every training step, so keep it cheap."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Attach string tags to the run."""

    def log_artifact(
        self, local_path: str | os.PathLike[str], *, artifact_path: str | None = None
    ) -> None:
        """Store a local file or directory with the run, under `artifact_path` if given."""

    def log_model(
        self,
        model: Any,
        *,
        name: str = "model",
        input_example: Any | None = None,
        step: int = 0,
        metrics: Mapping[str, float] | None = None,
    ) -> str | None:
        """Store a `keras.Model` as `name` (`model`, later `ema_model`, `best_model`).

        `input_example` lets the backend record its signature; `metrics` are its scores at
        `step`, linked to it where the backend can. Returns the backend's model id, if any.
        """
        return None

    def log_dataset(self, dataset: DatasetRecord) -> None:
        """Record a data set the run trained or validated on."""

    def flush(self, *, wait: bool = True) -> None:
        """Push out everything logged so far.

        With `wait` (the default), block until it is delivered or its failure reported; without,
        start the delivery and return at once (the training loop's per-epoch flush).
        """

    def close(self, status: RunStatus = "FINISHED", *, error: str | None = None) -> None:
        """Finish the run with `status`; `error` is the failure text when it did not succeed."""


def check_status(status: str) -> RunStatus:
    """Return `status` if it is a valid `RunStatus`, else raise `ValueError`."""
    if status not in RUN_STATUSES:
        raise ValueError(
            f"`status` must be one of {', '.join(RUN_STATUSES)}. Received: status={status!r}"
        )
    return status  # type: ignore[return-value]
