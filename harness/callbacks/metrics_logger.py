"""Send step logs, epoch logs, the applied learning rate and throughput to a sink."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import keras

from harness.callbacks.batches import batches_done


class MetricSink(Protocol):
    """What `MetricsLogger` needs from a tracking sink."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None: ...

    def flush(self, *, wait: bool = True) -> None: ...


class MetricsLogger(keras.callbacks.Callback):
    """Log metrics to a sink on the optimizer's global step, in either engine.

    Every `log_every_n_steps` optimizer steps, the batch logs go out as `step/<name>` along
    with `step/learning_rate`, the rate applied at that step. At each epoch end the epoch logs
    (`loss`, `val_loss`, ...) go out under their own names with `learning_rate`, `epoch`,
    `epoch_time_s` and `steps_per_sec`, and the sink is flushed (without waiting; the flush at
    train end waits).

    The callback is `async_safe`: Keras may run `on_train_batch_end` on a worker thread, so the
    training loop never waits for a step's results to be read. Nothing on the training thread
    reads a tensor between epochs, and each batch's decision to log depends only on its index.

    Args:
        sink: where metrics go (any `tracking.Sink`).
        log_every_n_steps: how often step-level metrics are sent.
        keys: only these log keys (all when None); a missing key warns once.
        step_prefix: prefix for step-level metric names.
    """

    async_safe = True

    def __init__(
        self,
        sink: MetricSink,
        *,
        log_every_n_steps: int = 1,
        keys: Sequence[str] | None = None,
        step_prefix: str = "step/",
    ) -> None:
        super().__init__()
        if log_every_n_steps < 1:
            raise ValueError(
                f"`log_every_n_steps` must be >= 1. Received: log_every_n_steps={log_every_n_steps}"
            )
        self.sink = sink
        self.every = log_every_n_steps
        self.keys = list(keys) if keys is not None else None
        self.step_prefix = step_prefix
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._schedule: Any = None
        self._epoch_first_step = 0
        self._epoch_start = 0.0
        self._train_end = 0.0
        self._batches_done = 0
        self._steps: int | None = None
        self._per_call = 1

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Fixed for the whole run: read once here, not in the per-batch hook.
        self._steps = self.params.get("steps")
        self._per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        learning_rate = getattr(self.model.optimizer, "_learning_rate", None)
        schedules = keras.optimizers.schedules.LearningRateSchedule
        self._schedule = learning_rate if isinstance(learning_rate, schedules) else None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # One variable read per epoch; within the epoch, steps are counted from batch indices.
        self._epoch_first_step = int(self.model.optimizer.iterations)
        self._batches_done = 0
        self._epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        done = batches_done(batch, self._steps)
        with self._lock:
            self._batches_done = max(self._batches_done, done)
            self._train_end = time.perf_counter()
        step = self._epoch_first_step + done
        # Steps done before this call began: its nominal first batch index.
        previous = self._epoch_first_step + max(batch - self._per_call + 1, 0)
        if step // self.every <= previous // self.every:
            return
        metrics = {f"{self.step_prefix}{k}": v for k, v in self._select(logs or {}).items()}
        metrics[f"{self.step_prefix}learning_rate"] = self._applied_lr(step)
        self.sink.log_metrics(metrics, step=step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        steps = self._batches_done
        train_time = max(self._train_end - self._epoch_start, 1e-9)
        global_step = self._epoch_first_step + steps
        metrics = dict(self._select(logs or {}))
        metrics.update(
            epoch=float(epoch),
            learning_rate=self._next_lr(global_step),
            epoch_time_s=now - self._epoch_start,
            steps_per_sec=steps / train_time if steps > 0 else 0.0,
        )
        self.sink.log_metrics(metrics, step=global_step)
        # Start delivery now without stalling training; on_train_end and close() wait.
        self.sink.flush(wait=False)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.sink.flush()

    def _applied_lr(self, step: int) -> float:
        """The rate applied by optimizer step `step` (1-based): the schedule at `step - 1`."""
        if self._schedule is not None:
            return float(keras.ops.convert_to_numpy(self._schedule(step - 1)))
        # Read at every logged step: callbacks may change the rate between batches (warm-up).
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _next_lr(self, global_step: int) -> float:
        if self._schedule is not None:
            return self._applied_lr(global_step + 1)
        return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def _select(self, logs: Mapping[str, Any]) -> dict[str, float]:
        if self.keys is None:
            return {k: float(v) for k, v in logs.items()}
        missing = [k for k in self.keys if k not in logs and k not in self._warned]
        if missing:
            self._warned.update(missing)
            warnings.warn(
                f"MetricsLogger: keys {missing} are not in the logs; available keys: "
                f"{sorted(logs)}. Fix `keys` to name available ones.",
                stacklevel=2,
            )
        return {k: float(logs[k]) for k in self.keys if k in logs}
