"""`PlateauReducer`: lower a `PlateauSchedule`'s multiplier when a metric stops improving."""

from __future__ import annotations

from typing import Any, Literal

import keras
import numpy as np

from harness.schedules import PlateauSchedule


class PlateauReducer(keras.callbacks.Callback):
    """Multiply the learning rate by `factor` after `patience` epochs without improvement.

    Unlike Keras's `ReduceLROnPlateau`, which overwrites the optimizer's rate (and so a
    schedule), this lowers the multiplier of a `PlateauSchedule` wrapped around any schedule:
    warm-up, cosine and plateau work together. The multiplier goes into the epoch logs as
    `lr_multiplier`; `state()` / `restore()` carry the counters across a resume.

    Args:
        schedule: the optimizer's `PlateauSchedule`.
        monitor: an epoch-level key (`val_loss`, `val_accuracy`, ...).
        factor: in (0, 1); patience, cooldown: epochs; min_delta: the least change that
            counts as an improvement; mode: `min`, `max`, or `auto` (max for accuracies).

    Raises:
        ValueError: at the first epoch end, when the logs have no `monitor` key (the message
            lists the keys there are).
    """

    def __init__(
        self,
        schedule: PlateauSchedule,
        *,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        cooldown: int = 0,
        min_delta: float = 1e-4,
        mode: Literal["auto", "min", "max"] = "auto",
    ) -> None:
        super().__init__()
        if not 0.0 < factor < 1.0:
            raise ValueError(f"`factor` must be in (0, 1). Received: factor={factor}")
        if patience < 0 or cooldown < 0:
            raise ValueError(
                "`patience` and `cooldown` must be >= 0. Received: "
                f"patience={patience}, cooldown={cooldown}"
            )
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"`mode` must be auto, min or max. Received: mode={mode!r}")
        self.schedule = schedule
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.cooldown, self.min_delta = cooldown, abs(min_delta)
        maximize = mode == "max" or (mode == "auto" and "acc" in monitor)
        self._sign = -1.0 if maximize else 1.0  # compare as "lower is better"
        self.wait = self.cooldown_counter = 0
        self.best = np.inf

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.wait = self.cooldown_counter = 0
        self.best = np.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        if self.monitor not in logs:
            raise ValueError(
                f"plateau.monitor: the epoch logs have no '{self.monitor}'. Available keys: "
                f"{sorted(logs)}. Set plateau.monitor to one of them"
            )
        current = self._sign * float(np.asarray(logs[self.monitor]))
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if current < self.best - self.min_delta:
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self.schedule.multiplier.assign(self.multiplier * self.factor)
                self.cooldown_counter, self.wait = self.cooldown, 0
        logs["lr_multiplier"] = self.multiplier

    @property
    def multiplier(self) -> float:
        return float(keras.ops.convert_to_numpy(self.schedule.multiplier))

    def state(self) -> dict[str, Any]:
        return {
            "wait": self.wait,
            "cooldown_counter": self.cooldown_counter,
            "best": self.best,
            "multiplier": self.multiplier,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.wait, self.cooldown_counter = int(state["wait"]), int(state["cooldown_counter"])
        self.best = float(state["best"])
        self.schedule.multiplier.assign(float(state["multiplier"]))
