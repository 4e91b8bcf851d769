"""The sections that shape learning beyond the optimizer: the learning-rate schedule, the
plateau multiplier, the weight average (EMA) and fine-tuning."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from experiments.config.base import Section

ScheduleName = Literal[
    "constant", "step", "exponential", "time_decay", "cosine", "polynomial", "piecewise"
]
# The settings each schedule takes besides warmup_steps / warmup_start.
SCHEDULE_SETTINGS: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("factor", "every_epochs", "every_steps"),
    "exponential": ("decay_rate", "decay_steps"),
    "time_decay": ("decay",),
    "cosine": ("alpha", "decay_steps", "restarts"),
    "polynomial": ("power", "end_learning_rate", "decay_steps"),
    "piecewise": ("boundaries", "values"),
}


class ScheduleSection(Section):
    """The learning-rate schedule; the base rate is `optimizer.learning_rate`."""

    name: ScheduleName = Field(
        "constant",
        description="constant, step, exponential, time_decay, cosine, polynomial or piecewise; "
        "counted in optimizer updates",
    )
    warmup_steps: int = Field(
        0, ge=0, description="linear warm-up from warmup_start to the base rate, any schedule"
    )
    warmup_start: float = Field(0.0, ge=0.0, description="the rate the warm-up starts from")
    factor: float | None = Field(
        None, gt=0.0, description="step: the rate times factor every every_epochs or every_steps"
    )
    every_epochs: int | None = Field(None, ge=1, description="step: epochs between steps down")
    every_steps: int | None = Field(
        None, ge=1, description="step: optimizer updates between steps down"
    )
    decay_rate: float | None = Field(
        None, gt=0.0, description="exponential: the rate times decay_rate every decay_steps"
    )
    decay_steps: int | None = Field(
        None,
        ge=1,
        description="exponential, cosine, polynomial: updates of the decay (cosine: default the "
        "rest of the run)",
    )
    decay: float | None = Field(None, ge=0.0, description="time_decay: lr / (1 + decay * t)")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="cosine: decays to alpha * lr")
    restarts: bool | None = Field(None, description="cosine: restart every decay_steps")
    power: float | None = Field(None, gt=0.0, description="polynomial: the power of the decay")
    end_learning_rate: float | None = Field(
        None, ge=0.0, description="polynomial: the rate it ends at"
    )
    boundaries: list[int] | None = Field(
        None, description="piecewise: the updates where the rate changes"
    )
    values: list[float] | None = Field(
        None, description="piecewise: the rates, one more than boundaries"
    )

    @model_validator(mode="after")
    def _settings_of_this_schedule(self) -> ScheduleSection:
        allowed = SCHEDULE_SETTINGS[self.name]
        given = [
            key
            for key in self.model_fields_set
            if key not in ("name", "warmup_steps", "warmup_start")
            and key not in allowed
            and getattr(self, key) is not None  # null: not given (a saved config has them all)
        ]
        if given:
            raise ValueError(
                f"schedule {self.name} takes no {', '.join(sorted(given))}; its settings are "
                f"{', '.join(allowed) or 'none'} (and warmup_steps, warmup_start)"
            )
        required = {
            "step": [("factor",), ("every_epochs", "every_steps")],
            "exponential": [("decay_rate",), ("decay_steps",)],
            "time_decay": [("decay",)],
            "piecewise": [("boundaries",), ("values",)],
        }.get(self.name, [])
        for options in required:
            if all(getattr(self, key) is None for key in options):
                raise ValueError(
                    f"schedule {self.name} needs {' or '.join(options)}, e.g. "
                    f"schedule.{options[0]}=..."
                )
        if self.every_epochs is not None and self.every_steps is not None:
            raise ValueError("schedule step takes every_epochs or every_steps, not both")
        return self


class PlateauSection(Section):
    """Lower the rate (a multiplier on the schedule) when `monitor` stops improving."""

    monitor: str = Field("val_loss", description="the epoch metric watched")
    factor: float = Field(
        0.1, gt=0.0, lt=1.0, description="the multiplier is times factor on a stall"
    )
    patience: int = Field(10, ge=0, description="epochs without improvement before lowering")
    cooldown: int = Field(0, ge=0, description="epochs to wait after lowering")
    min_lr: float = Field(0.0, ge=0.0, description="the rate never goes below")
    min_delta: float = Field(
        1e-4, ge=0.0, description="the least change that counts as improvement"
    )
    mode: Literal["auto", "min", "max"] = Field(
        "auto", description="auto (from the metric's name), min or max"
    )


class EmaSection(Section):
    """An exponential moving average of the weights, evaluated and snapshotted."""

    decay: float = Field(0.999, gt=0.0, lt=1.0, description="the average's decay per update")
    warmup: bool = Field(True, description="use min(decay, (1+n)/(10+n)) early on")
    every_n_steps: int = Field(1, ge=1, description="optimizer updates between average updates")
    start_step: int = Field(0, ge=0, description="the update from which the average runs")
    include_non_trainable: bool = Field(
        True, description="average the non-trainable weights (batch-norm statistics) too"
    )
    snapshot_every_n_epochs: int | None = Field(None, ge=1, description="default: at the end")


class FinetuneSection(Section):
    """Freeze layers (glob patterns on names), unfreeze them later, per-layer rates."""

    freeze: list[str] = Field(
        default_factory=list, description='glob patterns of layer names not trained, e.g. ["conv*"]'
    )
    unfreeze_at_epoch: int | None = Field(None, ge=2, description="counted from 1")
    layer_lr: dict[str, float] = Field(default_factory=dict, description="pattern: multiplier")

    @model_validator(mode="after")
    def _unfreeze_needs_freeze(self) -> FinetuneSection:
        if self.unfreeze_at_epoch is not None and not self.freeze:
            raise ValueError(
                "finetune.unfreeze_at_epoch unfreezes the layers of finetune.freeze, which is "
                "empty: list the layers to freeze, e.g. finetune.freeze=['conv*']"
            )
        return self
