"""Send step logs, epoch logs, the applied learning rate and throughput to a sink."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import keras

from harness import keras_internals
from harness.callbacks.batches import batches_done
from harness.callbacks.events import STEP_EVENTS_PARAM, StepEnd
from harness.logs import scalar_logs


class MetricSink(Protocol):
    """What `MetricsLogger` needs from a tracking sink."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None: ...

    def flush(self, *, wait: bool = True) -> None: ...


class MetricsLogger(keras.callbacks.Callback):
    """Log metrics to a sink on the global step (optimizer updates), in either engine.

    Every `log_every_n_steps` optimizer updates, the values of that update's batch go out as
    `step/batch_<name>` (`step/batch_loss`, `step/batch_accuracy`, ...) along with
    `step/learning_rate`, the rate the update applied, and the step's own values
    (`step/grad_norm` before clipping, `step/skipped_steps`, `step/loss_scale`). At each
    epoch end the epoch logs (`loss`, `val_loss`, ...) go out under their own names with
    `learning_rate` (the rate of the next update), `epoch` (counted from 1), `epoch_time_s`
    and `steps_per_sec`, and the sink is flushed (without waiting; the flush at train end
    waits). Vector-valued metrics are logged per component (`f1_score/0`, `f1_score/1`, ...).
    The `batch_` names keep step charts apart from epoch charts in MLflow, which titles a
    chart by the name after the `step/` group.

    In the harness's loop the step, the rate and the batch values come out of the compiled
    step itself (`on_train_step_end`), so they are exact with accumulated, skipped or
    loss-scaled updates. Inside a plain `model.fit(...)` — tracking for an existing script —
    the step is counted from batch indices, the rate read from the optimizer, and the only
    values `fit` exposes are Keras's running means of the epoch, logged as `step/running_<name>`.

    The callback is `async_safe`: its per-step work runs off the training thread, which never
    waits for a step's results to be read.

    Args:
        sink: where metrics go (any `tracking.Sink`).
        log_every_n_steps: how often step-level metrics are sent.
        keys: only these log keys (all when None); a missing key warns once.
        step_prefix: prefix (MLflow chart group) of step-level metric names.

    Example:
        >>> model.fit(x, y, callbacks=[MetricsLogger(MlflowSink.start(uri, experiment="e"))])
    """

    async_safe = True
    step_events_only = True  # in the harness's loop, on_train_step_end replaces the batch hook
    stateless = True  # each epoch starts from the optimizer's (restored) step

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
        self._step_events = False
        self._epoch_first_step = 0
        self._last_step = 0
        self._epoch_start = 0.0
        self._train_end = 0.0
        self._steps: int | None = None
        self._per_call = 1
        self._names: dict[tuple[Any, ...], list[str]] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # Fixed for the whole run: read once here, not in the per-batch hooks.
        self._step_events = bool(self.params.get(STEP_EVENTS_PARAM))
        self._steps = self.params.get("steps")
        self._per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # One variable read per epoch (after a resume restored the optimizer).
        self._epoch_first_step = self._last_step = int(self.model.optimizer.iterations.numpy())
        self._epoch_start = self._train_end = time.perf_counter()

    def on_train_step_end(self, event: StepEnd) -> None:
        """From the harness's loop: log if a multiple of `log_every_n_steps` was crossed."""
        previous, self._last_step = self._last_step, event.step
        self._train_end = time.perf_counter()
        if event.step // self.every > previous // self.every:
            self._log_step(
                event.batch_logs,
                event.step,
                event.learning_rate,
                kind="batch_",
                values=event.values,
            )

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._step_events:
            return  # the harness's loop reports the same step through on_train_step_end
        # Inside a plain model.fit: steps from batch indices, one update per batch.
        done = batches_done(batch, self._steps)
        step = self._epoch_first_step + done
        previous = self._epoch_first_step + max(batch - self._per_call + 1, 0)
        with self._lock:  # Keras may run batch hooks of one epoch on several threads
            self._last_step = max(self._last_step, step)
            self._train_end = time.perf_counter()
        if step // self.every > previous // self.every:
            self._log_step(
                scalar_logs(logs or {}), step, self._fit_applied_lr(step), kind="running_"
            )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.perf_counter()
        steps = self._last_step - self._epoch_first_step
        train_time = max(self._train_end - self._epoch_start, 1e-9)
        metrics = self._select(scalar_logs(logs or {}))
        metrics.update(
            epoch=float(epoch + 1),  # as users count epochs; Keras's callbacks get 0-based
            learning_rate=_as_float(self.model.optimizer.learning_rate),
            epoch_time_s=now - self._epoch_start,
            steps_per_sec=steps / train_time if steps > 0 else 0.0,
        )
        self.sink.log_metrics(metrics, step=self._last_step)
        # Start delivery now without stalling training; on_train_end and close() wait.
        self.sink.flush(wait=False)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.sink.flush()

    @staticmethod
    def step_metric_names(
        log_keys: Sequence[str],
        value_names: Sequence[str] = (),
        *,
        step_prefix: str = "step/",
        kind: str = "batch_",
    ) -> list[str]:
        """The names logged at each logged step, from the batch logs' keys (`loss`, ...) and
        the step's own values (`grad_norm`, ...): `step/batch_loss`, `step/learning_rate`,
        `step/grad_norm`, ... (`kind="running_"` inside a plain `model.fit`)."""
        return [
            *(f"{step_prefix}{kind}{key}" for key in log_keys),
            f"{step_prefix}learning_rate",
            *(f"{step_prefix}{name}" for name in value_names),
        ]

    def _log_step(
        self,
        logs: dict[str, float],
        step: int,
        learning_rate: float,
        *,
        kind: str,
        values: Mapping[str, float] | None = None,
    ) -> None:
        logs, values = self._select(logs), values or {}  # values: grad_norm, loss_scale, ...
        shape = (tuple(logs), tuple(values), kind)
        names = self._names.get(shape)
        if names is None:  # the same keys every step: the names are built once
            names = self._names[shape] = self.step_metric_names(
                list(logs), list(values), step_prefix=self.step_prefix, kind=kind
            )
        numbers = [*logs.values(), learning_rate, *values.values()]
        self.sink.log_metrics(dict(zip(names, numbers, strict=True)), step=step)

    def _fit_applied_lr(self, step: int) -> float:
        """Inside plain `fit`: the rate update `step` (1-based) applied, read afterwards."""
        optimizer = keras_internals.inner_optimizer(self.model.optimizer)
        schedule = keras_internals.learning_rate_schedule(optimizer)
        if schedule is not None:
            return _as_float(schedule(step - 1))
        # Read at every logged step: callbacks may change the rate between batches (warm-up).
        return _as_float(optimizer.learning_rate)

    def _select(self, logs: Mapping[str, float]) -> dict[str, float]:
        if self.keys is None:
            return dict(logs)
        missing = [k for k in self.keys if not _present(k, logs) and k not in self._warned]
        if missing:
            self._warned.update(missing)
            warnings.warn(
                f"MetricsLogger: keys {missing} are not in the logs; available keys: "
                f"{sorted(logs)}. Fix `keys` to name available ones.",
                stacklevel=2,
            )
        return {k: v for k, v in logs.items() if k.split("/")[0] in self.keys or k in self.keys}


def _present(key: str, logs: Mapping[str, float]) -> bool:
    return key in logs or any(name.startswith(f"{key}/") for name in logs)


def _as_float(value: Any) -> float:
    return float(keras.ops.convert_to_numpy(value))
