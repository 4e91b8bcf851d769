"""A callback that slows training down so a test can signal the process mid-run."""

from __future__ import annotations

import time
from typing import Any

import keras


class SlowDown(keras.callbacks.Callback):
    def __init__(self, seconds: float = 0.2) -> None:
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        time.sleep(self.seconds)
