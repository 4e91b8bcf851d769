"""Progress output: a live bar in a terminal, plain periodic lines otherwise (CI, log files)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import keras

from harness.callbacks.batches import batches_done
from harness.callbacks.events import STEP_EVENTS_PARAM, StepEnd


def _format_logs(logs: Mapping[str, Any]) -> str:
    return " - ".join(f"{k}: {float(v):.4g}" for k, v in logs.items())


class ProgressLogger(keras.callbacks.Callback):
    """Show training progress with an ETA and the current metrics.

    Args:
        mode: "bar" (rich live bar), "lines" (a plain line every `interval_s` and at each
            epoch end), "none", or "auto": a bar when `stream` is a terminal, lines otherwise.
        interval_s: how often lines are printed or the bar's metrics refreshed.
        stream: where output goes.
    """

    # Safe on a worker thread: the bar is locked, lines are whole prints. In the harness's
    # loop it follows on_train_step_end (off the training thread) instead of batch hooks.
    async_safe = True
    step_events_only = True
    stateless = True  # what it shows is redrawn from the epoch a resumed run starts at

    def __init__(
        self, mode: str = "auto", *, interval_s: float = 10.0, stream: TextIO | None = None
    ) -> None:
        super().__init__()
        if mode not in ("auto", "bar", "lines", "none"):
            raise ValueError(
                f"`mode` must be one of auto, bar, lines, none. Received: mode={mode!r}"
            )
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode = mode
        self.interval_s = interval_s if mode == "lines" else min(interval_s, 0.25)
        self._progress: Any = None
        self._task: Any = None
        self._epoch = 0
        self._epoch_start = 0.0
        self._last_print = 0.0

    def _steps(self) -> int | None:
        return self.params.get("steps")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.mode != "bar":
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.table import Column

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            # Long metrics wrap in their column: the count and the ETA are never squeezed out.
            TextColumn("{task.fields[metrics]}", table_column=Column(overflow="fold")),
            console=Console(file=self.stream),
        )
        self._progress.start()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._epoch_start = self._last_print = time.perf_counter()
        if self._progress is not None:
            description = f"epoch {epoch + 1}/{self.params.get('epochs')}"
            self._task = self._progress.add_task(description, total=self._steps(), metrics="")

    def on_train_step_end(self, event: StepEnd) -> None:
        """From the harness's loop: the same as a batch end, logs read only when shown."""
        self._batch_done(event.batch, lambda: event.logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self.params.get(STEP_EVENTS_PARAM):
            self._batch_done(batch, lambda: logs or {})

    def _batch_done(self, batch: int, logs: Callable[[], Mapping[str, Any]]) -> None:
        if self.mode == "none":
            return
        now = time.perf_counter()
        steps = self._steps()
        done = batches_done(batch, steps)
        if self._progress is not None:
            self._progress.update(self._task, completed=done)
        if now - self._last_print < self.interval_s:
            return
        self._last_print = now
        text = _format_logs(logs())
        if self._progress is not None:
            self._progress.update(self._task, metrics=text)
        else:
            self._line(f"{done}/{steps or '?'} steps - {text}", now)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.mode == "none":
            return
        text = _format_logs(logs or {})
        if self._progress is not None:
            self._progress.update(self._task, metrics=text)
        else:
            self._line(f"done - {text}", time.perf_counter())

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live bar; safe to call twice (the trainer calls it after errors too)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def _line(self, message: str, now: float) -> None:
        elapsed = now - self._epoch_start
        print(
            f"epoch {self._epoch + 1}/{self.params.get('epochs')} {elapsed:.1f}s - {message}",
            file=self.stream,
            flush=True,
        )
