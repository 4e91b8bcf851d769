"""`WeightAverage`: an exponential moving average of a model's weights, updated in graph.

The update is a few fused multiply-adds per weight, meant to run inside the compiled train
call after `apply_gradients` (no Python call per batch); swapping the averaged weights into
the model is a context manager, so no exception, evaluation or save inside the block can
leave the wrong weights behind.

Example:
    >>> ema = WeightAverage(model, decay=0.999)
    >>> ema.update(model.optimizer.iterations)   # inside the compiled step
    >>> with ema.swapped():
    ...     model.evaluate(x_val, y_val)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
from keras import ops


class WeightAverage:
    """Shadow copies of a model's weights: `shadow = d * shadow + (1 - d) * weight`.

    Args:
        model: a built `keras.Model`.
        decay: in (0, 1).
        warmup: use `min(decay, (1 + n) / (10 + n))` for the n-th update, so early averages
            are not dominated by the initial weights.
        every_n_steps: update when the global step is a multiple of this.
        start_step: no update before this global step (the shadow follows the weights).
        include_non_trainable: average non-trainable weights too (BatchNorm statistics).
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        decay: float = 0.999,
        warmup: bool = True,
        every_n_steps: int = 1,
        start_step: int = 0,
        include_non_trainable: bool = True,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"`decay` must be in (0, 1). Received: decay={decay}")
        if every_n_steps < 1:
            raise ValueError(
                f"`every_n_steps` must be >= 1. Received: every_n_steps={every_n_steps}"
            )
        if start_step < 0:
            raise ValueError(f"`start_step` must be >= 0. Received: start_step={start_step}")
        self.decay, self.warmup = float(decay), warmup
        self.every_n_steps, self.start_step = int(every_n_steps), int(start_step)
        weights = model.trainable_weights
        if include_non_trainable:
            weights = weights + model.non_trainable_weights
        self.weights = [w for w in weights if "float" in str(w.dtype)]
        self.shadows = [
            keras.Variable(np.array(w.numpy()), trainable=False, name=f"ema_{i}")
            for i, w in enumerate(self.weights)
        ]
        self.updates = keras.Variable(0, dtype="int64", trainable=False, name="ema_updates")

    def update(self, step: Any, *, applied: Any = True) -> None:
        """Average in the current weights if `step` (updates so far) is due; graph-friendly.

        `applied` (a boolean tensor) says whether the optimizer updated the weights at all
        this step: a micro-batch of an accumulated update or a skipped step leaves the
        average as it is.

        Written as `shadow -= (1 - d) * (shadow - weight)`: one subtract, one multiply and one
        in-place update per weight, with `1 - d` computed once per call (and cast once per
        dtype). The due / before-start logic is only traced when the settings need it.
        """
        n = ops.cast(self.updates, "float32")
        decay = ops.minimum(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay
        rate = ops.subtract(1.0, decay)
        due: Any = 1
        if self.every_n_steps > 1 or self.start_step > 0:
            step = ops.cast(step, "int64")
            due = ops.logical_and(step >= self.start_step, step % self.every_n_steps == 0)
            # Not due: rate 0 keeps the shadow; before start_step it follows the weights (1).
            rate = ops.where(due, rate, ops.where(step < self.start_step, 1.0, 0.0))
        if applied is not True:
            due = applied if isinstance(due, int) else ops.logical_and(due, applied)
            rate = ops.where(applied, rate, 0.0)
        rates: dict[str, Any] = {}
        for shadow, weight in zip(self.shadows, self.weights, strict=True):
            dtype = str(shadow.dtype)
            if dtype not in rates:
                rates[dtype] = ops.cast(rate, dtype)
            shadow.assign_sub(rates[dtype] * (shadow - weight))
        self.updates.assign_add(ops.cast(due, "int64"))

    @contextmanager
    def swapped(self) -> Iterator[None]:
        """The averaged weights in the model inside the block, the raw ones after it."""
        raw = [np.array(w.numpy(), copy=True) for w in self.weights]
        for weight, shadow in zip(self.weights, self.shadows, strict=True):
            weight.assign(shadow)
        try:
            yield
        finally:
            for weight, value in zip(self.weights, raw, strict=True):
                weight.assign(value)

    def state(self) -> dict[str, Any]:
        return {
            "shadows": [np.array(s.numpy(), copy=True) for s in self.shadows],
            "updates": int(self.updates.numpy()),
        }

    def snapshot(self) -> dict[str, Any]:
        """`state()` as tensors read now (see `harness.state.read`)."""
        from harness.state import read

        return {"shadows": [read(s) for s in self.shadows], "updates": read(self.updates)}

    def restore(self, state: dict[str, Any]) -> None:
        for shadow, value in zip(self.shadows, state["shadows"], strict=True):
            shadow.assign(value)
        self.updates.assign(int(state["updates"]))
