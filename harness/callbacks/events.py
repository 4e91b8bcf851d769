"""What the loop reports after each compiled training call, beyond Keras's `logs`.

Keras callbacks get `on_train_batch_end(batch, logs)` exactly as in `fit()`. Callbacks of ours
that need to know the optimizer's side — the global step (optimizer updates, not batches) and
the learning rate the last update applied — also get `on_train_step_end(StepEnd)`, from the
same compiled call's outputs. The loop announces it in the callback params
(`params[STEP_EVENTS_PARAM]`), so such a callback can tell our loop from a plain `model.fit`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from harness.logs import scalar_logs
from harness.step.outputs import StepOutputs

STEP_EVENTS_PARAM = "harness_step_events"


class StepEnd:
    """One compiled training call (an execution of `steps_per_execution` batches) is done.

    Attributes:
        batch: the index `on_train_batch_end` got (the execution's nominal last batch).
        step: optimizer updates so far, the global step of logs, MLflow and TensorBoard.
        learning_rate: the rate the execution's last update applied.
        logs: the batch logs as numbers (Keras's running means of the epoch so far).
        batch_logs: the same keys, the values of the execution's last batch alone.
        values: further per-step metrics of the update (`grad_norm`, `skipped_steps`, ...).
        halted_at: the update whose gradients halted training (`on_nan`), 0 if none.

    `learning_rate`, `logs`, `batch_logs` and `values` are read from the step's tensors when
    first used, so a callback that logs every 10th step pays for reading them every 10th step.
    """

    __slots__ = (
        "batch",
        "step",
        "_raw_learning_rate",
        "_raw_logs",
        "_raw_batch_logs",
        "_raw_values",
        "_raw_halted_at",
        "_learning_rate",
        "_logs",
        "_batch_logs",
        "_values",
    )

    def __init__(
        self,
        batch: int,
        step: int,
        learning_rate: Any,
        logs: Mapping[str, Any],
        batch_logs: Mapping[str, Any] | None = None,
        *,
        values: Mapping[str, Any] | None = None,
        halted_at: Any = 0,
    ) -> None:
        self.batch = batch
        self.step = step
        self._raw_learning_rate, self._raw_logs = learning_rate, logs
        self._raw_batch_logs = logs if batch_logs is None else batch_logs
        self._raw_values, self._raw_halted_at = values or {}, halted_at
        self._learning_rate: float | None = None
        self._logs: dict[str, float] | None = None
        self._batch_logs: dict[str, float] | None = None
        self._values: dict[str, float] | None = None

    @property
    def learning_rate(self) -> float:
        if self._learning_rate is None:
            self._learning_rate = float(self._raw_learning_rate)
        return self._learning_rate

    @property
    def logs(self) -> dict[str, float]:
        if self._logs is None:
            self._logs = scalar_logs(self._raw_logs)
        return self._logs

    @property
    def batch_logs(self) -> dict[str, float]:
        if self._batch_logs is None:
            self._batch_logs = scalar_logs(self._raw_batch_logs)
        return self._batch_logs

    @property
    def values(self) -> dict[str, float]:
        if self._values is None:
            self._values = scalar_logs(self._raw_values)
        return self._values

    @property
    def halted_at(self) -> int:
        return int(self._raw_halted_at)

    def __repr__(self) -> str:
        return f"StepEnd(batch={self.batch}, step={self.step})"


class StepEventDispatcher:
    """Delivers `on_train_step_end` to the callbacks that define it, in order.

    When all of them are `async_safe`, delivery (including reading the step's tensors) runs on
    one worker thread, so the training thread never waits for a step to finish: it keeps the
    steps' outputs and hands them over `HAND_OVER_EVERY` steps at a time, or once
    `HAND_OVER_AFTER_S` have passed since the last hand-over (slow steps), one wake-up of the
    worker per hand-over rather than per step. `hand_over` sends what is kept without waiting
    (the loop's at the end of an epoch's training batches); `flush` sends it and waits (the
    loop flushes before `on_epoch_end`, before a checkpoint and when training stops).
    """

    HAND_OVER_EVERY = 16
    HAND_OVER_AFTER_S = 0.1

    def __init__(self, callbacks: Iterable[Any]) -> None:
        self._listeners = [
            cb for cb in callbacks if callable(getattr(cb, "on_train_step_end", None))
        ]
        asynchronous = bool(self._listeners) and all(
            getattr(cb, "async_safe", False) for cb in self._listeners
        )
        self._executor = ThreadPoolExecutor(1, "harness-step-events") if asynchronous else None
        self._futures: deque[Future[None]] = deque()
        self._pending: list[tuple[int, Mapping[str, Any], StepOutputs]] = []
        self._handed_at = time.perf_counter()

    def dispatch(self, batch: int, logs: Mapping[str, Any], outputs: StepOutputs) -> None:
        if not self._listeners:
            return
        if self._executor is None:
            self._deliver(batch, logs, outputs)
            return
        self._pending.append((batch, logs, outputs))
        if (
            len(self._pending) >= self.HAND_OVER_EVERY
            or time.perf_counter() - self._handed_at >= self.HAND_OVER_AFTER_S
        ):
            self.hand_over()

    def flush(self) -> None:
        """Wait until every dispatched event is delivered; re-raise the first error."""
        self.hand_over()
        while self._futures:
            self._futures.popleft().result()

    def close(self) -> None:
        """Flush and stop the worker thread."""
        try:
            self.flush()
        finally:
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None

    def hand_over(self) -> None:
        """Send the kept events to the worker thread, without waiting for their delivery."""
        self._handed_at = time.perf_counter()
        if not self._pending or self._executor is None:
            return
        while self._futures and self._futures[0].done():
            self._futures.popleft().result()  # re-raise a callback's error promptly
        pending, self._pending = self._pending, []
        self._futures.append(self._executor.submit(self._deliver_all, pending))

    def _deliver_all(self, pending: list[tuple[int, Mapping[str, Any], StepOutputs]]) -> None:
        for batch, logs, outputs in pending:
            self._deliver(batch, logs, outputs)

    def _deliver(self, batch: int, logs: Mapping[str, Any], outputs: StepOutputs) -> None:
        event = StepEnd(
            batch,
            int(outputs.iterations),
            outputs.learning_rate,
            logs,
            outputs.batch,
            values=outputs.values,
            halted_at=outputs.halted_at,
        )
        for callback in self._listeners:
            callback.on_train_step_end(event)
