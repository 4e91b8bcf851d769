"""`EmaSnapshots`: save the averaged weights every few epochs and at the end, to a sink."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Protocol

import keras

from harness.step.ema import WeightAverage


class ArtifactSink(Protocol):
    """What `EmaSnapshots` needs from a tracking sink."""

    def log_artifact(self, local_path: Any, *, artifact_path: str | None = None) -> None: ...


class EmaSnapshots(keras.callbacks.Callback):
    """Store `ema/epoch-NNN.weights.h5` (epochs from 1) every `every_n_epochs` and at the end.

    The weights are written inside `ema.swapped()`, so the model holds its raw weights again
    whatever the save does.
    """

    def __init__(
        self, ema: WeightAverage, sink: ArtifactSink, *, every_n_epochs: int | None = None
    ) -> None:
        super().__init__()
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(
                f"`every_n_epochs` must be >= 1. Received: every_n_epochs={every_n_epochs}"
            )
        self.ema, self.sink, self.every = ema, sink, every_n_epochs
        self._last_saved: int | None = None
        self._epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch + 1
        if self.every is not None and self._epoch % self.every == 0:
            self._save(self._epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._epoch and self._last_saved != self._epoch:
            self._save(self._epoch)

    def state(self) -> dict[str, Any]:
        return {"last_saved": self._last_saved, "epoch": self._epoch}

    def restore(self, state: dict[str, Any]) -> None:
        self._last_saved, self._epoch = state["last_saved"], int(state["epoch"])

    def _save(self, epoch: int) -> None:
        with tempfile.TemporaryDirectory(prefix="ema-") as tmp:
            path = Path(tmp) / f"epoch-{epoch:03d}.weights.h5"
            with self.ema.swapped():
                self.model.save_weights(path)
            self.sink.log_artifact(path, artifact_path="ema")
        self._last_saved = epoch
