"""Learning-rate schedules stepped on `optimizer.iterations`: warm-up and a plateau multiplier
on top of any Keras schedule, serializable so a saved model reloads with its schedule.

`build_schedule("cosine", 0.01, warmup_steps=100, decay_steps=900)` is warm-up then cosine;
`PlateauSchedule` multiplies any schedule by a factor a callback lowers when a metric stalls
(Keras's `ReduceLROnPlateau` overwrites a schedule instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops
from keras.optimizers.schedules import LearningRateSchedule

SCHEDULES = ("constant", "step", "exponential", "time_decay", "cosine", "polynomial", "piecewise")


@keras.saving.register_keras_serializable(package="harness")
class ConstantSchedule(LearningRateSchedule):
    """The base rate at every step."""

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = float(learning_rate)

    def __call__(self, step: Any) -> Any:
        del step
        return ops.convert_to_tensor(self.learning_rate, "float32")

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package="harness")
class WarmupSchedule(LearningRateSchedule):
    """Linear warm-up from `warmup_start` to `schedule(0)` over `warmup_steps`, then
    `schedule(step - warmup_steps)`: the schedule's own clock starts after the warm-up."""

    def __init__(
        self, schedule: LearningRateSchedule, warmup_steps: int, warmup_start: float = 0.0
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be >= 0. Received: warmup_steps={warmup_steps}")
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.warmup_start = float(warmup_start)
        # schedule(0) is a constant: computed once (eagerly, here), not at every step.
        self._target = float(ops.convert_to_numpy(schedule(0)))

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        after = ops.cast(self.schedule(ops.maximum(step - self.warmup_steps, 0.0)), "float32")
        if self.warmup_steps == 0:
            return after
        fraction = ops.minimum(step / self.warmup_steps, 1.0)
        warm = self.warmup_start + (self._target - self.warmup_start) * fraction
        return ops.where(step < self.warmup_steps, warm, after)

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "warmup_steps": self.warmup_steps,
            "warmup_start": self.warmup_start,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WarmupSchedule:
        return cls(**_with_inner_schedule(config))


@keras.saving.register_keras_serializable(package="harness")
class PlateauSchedule(LearningRateSchedule):
    """`schedule(step) * multiplier`, where `multiplier` is a variable `PlateauReducer`
    lowers when the monitored metric stalls (its value is saved with the config).

    The reduction never takes the rate below `min_lr`; the schedule itself may.
    """

    def __init__(
        self, schedule: LearningRateSchedule, multiplier: float = 1.0, min_lr: float = 0.0
    ) -> None:
        self.schedule = schedule
        self.min_lr = float(min_lr)
        self.multiplier = keras.Variable(
            float(multiplier), dtype="float32", trainable=False, name="lr_multiplier"
        )

    def __call__(self, step: Any) -> Any:
        rate = ops.cast(self.schedule(step), "float32")
        return ops.maximum(rate * self.multiplier, ops.minimum(rate, self.min_lr))

    def get_config(self) -> dict[str, Any]:
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "multiplier": float(ops.convert_to_numpy(self.multiplier)),
            "min_lr": self.min_lr,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PlateauSchedule:
        return cls(**_with_inner_schedule(config))


def _with_inner_schedule(config: dict[str, Any]) -> dict[str, Any]:
    """A wrapper's config with its inner schedule deserialized."""
    return {**config, "schedule": keras.saving.deserialize_keras_object(config["schedule"])}


def build_schedule(
    name: str,
    learning_rate: float,
    *,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
    factor: float | None = None,
    every_steps: int | None = None,
    decay_rate: float | None = None,
    decay_steps: int | None = None,
    decay: float | None = None,
    alpha: float = 0.0,
    restarts: bool = False,
    power: float = 1.0,
    end_learning_rate: float = 0.0,
    boundaries: Sequence[int] = (),
    values: Sequence[float] = (),
) -> LearningRateSchedule:
    """A schedule by name, all counted in optimizer updates after the warm-up.

    - `constant`: the base rate.
    - `step`: times `factor` every `every_steps` updates.
    - `exponential`: times `decay_rate` every `decay_steps` updates, continuously.
    - `time_decay`: `lr / (1 + decay * t)`.
    - `cosine`: to `alpha * lr` over `decay_steps`; with `restarts`, again every `decay_steps`.
    - `polynomial`: to `end_learning_rate` over `decay_steps` with `power`.
    - `piecewise`: `values[i]` between `boundaries[i-1]` and `boundaries[i]` (the base rate
      is not used).

    Raises:
        ValueError: an unknown name or a missing setting; the message names it.
    """
    schedules = keras.optimizers.schedules
    inner: LearningRateSchedule
    if name == "constant":
        inner = ConstantSchedule(learning_rate)
    elif name == "step":
        inner = schedules.ExponentialDecay(
            learning_rate, _need(every_steps, "every_steps", name), _need(factor, "factor", name),
            staircase=True,
        )  # fmt: skip
    elif name == "exponential":
        inner = schedules.ExponentialDecay(
            learning_rate, _need(decay_steps, "decay_steps", name),
            _need(decay_rate, "decay_rate", name),
        )  # fmt: skip
    elif name == "time_decay":
        inner = schedules.InverseTimeDecay(learning_rate, 1, _need(decay, "decay", name))
    elif name == "cosine":
        steps = _need(decay_steps, "decay_steps", name)
        inner = (
            schedules.CosineDecayRestarts(learning_rate, steps, t_mul=1.0, m_mul=1.0, alpha=alpha)
            if restarts
            else schedules.CosineDecay(learning_rate, steps, alpha=alpha)
        )
    elif name == "polynomial":
        inner = schedules.PolynomialDecay(
            learning_rate, _need(decay_steps, "decay_steps", name), end_learning_rate, power=power
        )
    elif name == "piecewise":
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "schedule piecewise needs one more value than boundaries. Received: "
                f"boundaries={list(boundaries)}, values={list(values)}"
            )
        inner = schedules.PiecewiseConstantDecay(list(boundaries), list(values))
    else:
        raise ValueError(f"`name` must be one of {', '.join(SCHEDULES)}. Received: name={name!r}")
    return WarmupSchedule(inner, warmup_steps, warmup_start) if warmup_steps else inner


def _need(value: Any, setting: str, name: str) -> Any:
    if value is None:
        raise ValueError(f"schedule {name} needs `{setting}`. Received: {setting}=None")
    return value
