"""Send train logs (every n steps), epoch logs, the applied learning rate and throughput to a sink."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import keras


class MetricSink(Protocol):
    """What `MetricsLogger` needs from a tracking sink."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None: ...

    def flush(self) -> None: ...


class MetricsLogger(keras.callbacks.Callback):
    """Log metrics to a sink on the optimizer's global step, in either engine.

    Every `log_every_n_steps` optimizer steps, the batch logs go out as `step/<name>` along
    with `step/learning_rate`, the rate applied at that step. At each epoch end the epoch logs
    (`loss`, `val_loss`, ...) go out under their own names with `learning_rate`, `epoch`,
    `epoch_time_s` and `steps_per_sec`, and the sink is flushed.

    Args:
        sink: where metrics go (any `tracking.Sink`).
        log_every_n_steps: how often step-level metrics are sent.
        keys: only these log keys (all when None); a missing key warns once.
        step_prefix: prefix for step-level metric names.
    """

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
                "`log_every_n_steps` must be >= 1. "
                f"Received: log_every_n_steps={log_every_n_steps}"
            )
        self.sink = sink
        self.every = log_every_n_steps
        self.keys = list(keys) if keys is not None else None
        self.step_prefix = step_prefix
        self._warned: set[str] = set()
        self._epoch_first_step = 0
        self._last_logged = 0
        self._pending_lr: float | None = None
        self._epoch_start = 0.0
        self._train_end = 0.0
        self._last_batch = -1

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far, by the last batch seen."""
        return self._epoch_first_step + self._last_batch + 1

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._last_logged = int(self.model.optimizer.iterations)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # One variable read per epoch; per-step steps are counted from the batch index.
        self._epoch_first_step = int(self.model.optimizer.iterations)
        self._last_batch = -1
        self._epoch_start = time.perf_counter()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        steps_per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        next_step = self._epoch_first_step + batch + 1
        if (next_step + steps_per_call - 1) // self.every > self._last_logged // self.every:
            # Read before the update: this is the rate the coming step applies.
            self._pending_lr = _current_lr(self.model.optimizer)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        steps = self.params.get("steps")
        # With steps_per_execution, fit() reports a short final execution by its nominal index.
        self._last_batch = min(batch, steps - 1) if steps else batch
        self._train_end = time.perf_counter()
        step = self.global_step
        if step // self.every <= self._last_logged // self.every:
            return
        self._last_logged = step
        metrics = {f"{self.step_prefix}{k}": v for k, v in self._select(logs or {}).items()}
        if self._pending_lr is not None:
            metrics[f"{self.step_prefix}learning_rate"] = self._pending_lr
            self._pending_lr = None
        self.sink.log_metrics(metrics, step=step)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        steps = self._last_batch + 1
        train_time = max(self._train_end - self._epoch_start, 1e-9)
        metrics = dict(self._select(logs or {}))
        metrics.update(
            epoch=float(epoch),
            learning_rate=_current_lr(self.model.optimizer),
            epoch_time_s=now - self._epoch_start,
            steps_per_sec=steps / train_time if steps > 0 else 0.0,
        )
        self.sink.log_metrics(metrics, step=self.global_step)
        self.sink.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.sink.flush()

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


def _current_lr(optimizer: Any) -> float:
    # For a schedule, Keras evaluates it at `optimizer.iterations`, i.e. the next step's rate.
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
