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


# Names cut short so more values fit a line; the full names are in MLflow and TensorBoard.
_SHORT = {"accuracy": "acc", "learning_rate": "lr", "categorical": "cat", "sparse_": "sp_"}
# Values about the pace of training, not its quality: the first to go when a line is full.
_PACE = ("epoch", "epoch_time_s", "steps_per_sec", "learning_rate")


def _short(name: str) -> str:
    for long, short in _SHORT.items():
        name = name.replace(long, short)
    return name


def _importance(name: str) -> tuple[int, int]:
    """val_loss first, then validation metrics, the training loss, the rest, pace last."""
    if name in _PACE:
        return 3, _PACE.index(name)
    if name == "val_loss":
        return 0, 0
    if name.startswith("val_ema_"):  # the average's scores follow the training loss
        return 2, 0
    if name.startswith("val_"):
        return 1, 0
    return (1, 1) if name == "loss" else (2, 1)


def fit_logs(logs: Mapping[str, Any], width: int) -> str:
    """`logs` as `val_loss 0.2012  val_acc 0.94  loss 0.1873 ...`: the most important values
    first, names shortened, and only as many as fit `width` (never a value cut in two)."""
    items = sorted(
        ((k, v) for k, v in logs.items() if k != "epoch"), key=lambda kv: _importance(kv[0])
    )
    text = ""
    for key, value in items:
        try:
            shown = f"{_short(key)} {float(value):.4g}"
        except (TypeError, ValueError):
            continue
        candidate = f"{text}  {shown}" if text else shown
        if len(candidate) > width:
            break  # the rest are less important than the one that did not fit
        text = candidate
    return text


_BAR = 20  # the bar's width in columns


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
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=_BAR),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            # Fitted to what the line has left (`fit_logs`): never wrapped, never cut mid-value.
            TextColumn("{task.fields[metrics]}", table_column=Column(no_wrap=True)),
            console=Console(file=self.stream),
        )
        self._progress.start()

    def _room(self) -> int:
        """Columns left for the metrics beside the bar's fixed columns."""
        steps = self._steps() or 0
        fixed = len(f"epoch {self.params.get('epochs')}/{self.params.get('epochs')}") + _BAR
        fixed += 2 * len(str(steps or 999)) + 1 + 7 + 3 + 7 + 6  # count, times, ETA, gaps
        return max(0, self._progress.console.width - fixed - 1)

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
        if self._progress is not None:
            self._progress.update(self._task, metrics=fit_logs(logs(), self._room()))
        else:
            self._line(f"{done}/{steps or '?'} steps - {_format_logs(logs())}", now)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.mode == "none":
            return
        if self._progress is not None:
            # The epoch's line stays above the bar, as Keras prints one per epoch: its number
            # and time first, then the values that fit the terminal, most important first.
            self._progress.remove_task(self._task)
            elapsed = time.perf_counter() - self._epoch_start
            head = f"epoch {epoch + 1}/{self.params.get('epochs')}  {elapsed:.1f}s"
            width = self._progress.console.width - len(head) - 3
            line = f"{head}  {fit_logs(logs or {}, width)}".rstrip()
            self._progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self._line(f"done - {_format_logs(logs or {})}", time.perf_counter())

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
