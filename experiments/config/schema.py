"""The typed experiment config: every section validated before anything runs."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from experiments.config.search_schema import SearchSection
from experiments.config.urls import redact_all


class _Section(BaseModel):
    # No infinite or NaN number is ever a setting (a rate of .inf fails only inside the graph).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


MAX_COUNT = 10**9  # epochs, steps: beyond any run, within what a schedule can count


class ModelSection(_Section):
    name: str = Field(description="registry name (mlp, cnn, ...) or import path pkg.mod:fn")
    params: dict[str, Any] = Field(default_factory=dict)


class DataSection(_Section):
    name: str = Field(description="registry name (digits, ...) or import path pkg.mod:fn")
    params: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(32, ge=1)
    validation_split: float = Field(0.0, ge=0.0, lt=1.0)
    shuffle: bool = True
    drop_remainder: bool = False
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="linear: rates times batch_size / reference_batch_size"
    )
    reference_batch_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _reference_for_scaling(self) -> DataSection:
        if self.lr_scaling == "linear" and self.reference_batch_size is None:
            raise ValueError(
                "data.lr_scaling linear scales the learning rate by batch_size / "
                "reference_batch_size and needs data.reference_batch_size, e.g. "
                f"data.reference_batch_size={self.batch_size}"
            )
        return self

    @property
    def lr_scale(self) -> float:
        """What `lr_scaling` multiplies the learning rates by (Goyal et al.'s linear rule)."""
        if self.lr_scaling == "linear" and self.reference_batch_size is not None:
            return self.batch_size / self.reference_batch_size
        return 1.0


CLIPPING_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")


class OptimizerSection(_Section):
    name: str = "adam"
    learning_rate: float = Field(1e-3, gt=0.0)
    params: dict[str, Any] = Field(default_factory=dict)
    weight_decay: float | None = Field(None, ge=0.0, description="decoupled, times the rate")
    weight_decay_exclude: list[str] | None = Field(
        None, description="glob patterns of weight paths; default: biases, normalization"
    )
    clipnorm: float | None = Field(None, gt=0.0, description="each gradient's norm")
    clipvalue: float | None = Field(None, gt=0.0, description="each gradient element")
    global_clipnorm: float | None = Field(None, gt=0.0, description="all gradients' norm")

    @model_validator(mode="after")
    def _one_meaning_per_setting(self) -> OptimizerSection:
        clipping = [key for key in CLIPPING_KEYS if getattr(self, key) is not None]
        if len(clipping) > 1:
            raise ValueError(
                f"optimizer: {' and '.join(clipping)} contradict each other (Keras clips one "
                "way): keep one of clipnorm, clipvalue, global_clipnorm"
            )
        keys = ("weight_decay", *CLIPPING_KEYS)
        twice = [k for k in keys if k in self.params and getattr(self, k) is not None]
        if twice:
            raise ValueError(
                f"optimizer.params.{twice[0]} duplicates optimizer.{twice[0]}: set it once, "
                f"as optimizer.{twice[0]}"
            )
        return self

    def optimizer_settings(self) -> dict[str, Any]:
        """The optimizer's own arguments: `params` plus decay and clipping where set."""
        keys = ("weight_decay", *CLIPPING_KEYS)
        return {**self.params, **{k: getattr(self, k) for k in keys if getattr(self, k)}}


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


class ScheduleSection(_Section):
    """The learning-rate schedule; the base rate is `optimizer.learning_rate`."""

    name: ScheduleName = "constant"
    warmup_steps: int = Field(0, ge=0)
    warmup_start: float = Field(0.0, ge=0.0)
    factor: float | None = Field(None, gt=0.0)
    every_epochs: int | None = Field(None, ge=1)
    every_steps: int | None = Field(None, ge=1)
    decay_rate: float | None = Field(None, gt=0.0)
    decay_steps: int | None = Field(None, ge=1)
    decay: float | None = Field(None, ge=0.0)
    alpha: float | None = Field(None, ge=0.0, le=1.0)
    restarts: bool | None = None
    power: float | None = Field(None, gt=0.0)
    end_learning_rate: float | None = Field(None, ge=0.0)
    boundaries: list[int] | None = None
    values: list[float] | None = None

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


class PlateauSection(_Section):
    """Lower the rate (a multiplier on the schedule) when `monitor` stops improving."""

    monitor: str = "val_loss"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(10, ge=0)
    cooldown: int = Field(0, ge=0)
    min_lr: float = Field(0.0, ge=0.0)
    min_delta: float = Field(1e-4, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"


class EmaSection(_Section):
    """An exponential moving average of the weights, evaluated and snapshotted."""

    decay: float = Field(0.999, gt=0.0, lt=1.0)
    warmup: bool = True
    every_n_steps: int = Field(1, ge=1)
    start_step: int = Field(0, ge=0)
    include_non_trainable: bool = True
    snapshot_every_n_epochs: int | None = Field(None, ge=1, description="default: at the end")


class TrainerSection(_Section):
    engine: Literal["fit", "custom"] = "fit"
    epochs: int = Field(1, ge=1, le=MAX_COUNT)
    steps_per_epoch: int | None = Field(None, ge=1, le=MAX_COUNT)
    validation_steps: int | None = Field(None, ge=1, le=MAX_COUNT)
    steps_per_execution: int = Field(1, ge=1)
    jit_compile: bool = False
    seed: int = Field(0, ge=0, le=2**32 - 1, description="NumPy's seeds are 32-bit")
    deterministic: bool = False
    log_every_n_steps: int = Field(10, ge=1)
    progress: Literal["auto", "bar", "lines", "none"] = "auto"
    accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer update")
    on_nan: Literal["raise", "stop", "skip_step"] = "raise"
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    distribute: Literal["none", "mirrored"] = "none"
    devices: list[str] | None = Field(None, min_length=1, description="e.g. [GPU:0, GPU:1]")

    @model_validator(mode="after")
    def _whole_executions(self) -> TrainerSection:
        # fit() rounds an epoch up to whole executions; requiring whole ones keeps both
        # engines taking the same number of optimizer steps.
        spe, per_call = self.steps_per_epoch, self.steps_per_execution
        if spe is not None and spe % per_call:
            raise ValueError(
                f"trainer.steps_per_epoch ({spe}) must be a multiple of "
                f"trainer.steps_per_execution ({per_call}); e.g. set steps_per_epoch="
                f"{(spe // per_call + 1) * per_call}"
            )
        if spe is not None and spe % self.accumulation_steps:
            raise ValueError(
                accumulation_mismatch(spe, self.accumulation_steps, "trainer.steps_per_epoch")
            )
        if self.devices is not None and self.distribute == "none":
            raise ValueError(
                f"trainer.devices ({', '.join(self.devices)}) picks the devices of "
                "trainer.distribute=mirrored, and trainer.distribute is none: set "
                "trainer.distribute=mirrored, or drop trainer.devices"
            )
        return self


def accumulation_mismatch(batches: int, k: int, source: str) -> str:
    """The line for an epoch that does not split into whole accumulated updates."""
    return (
        f"trainer.accumulation_steps ({k}) must divide the epoch's {batches} batches (from "
        f"{source}), or an update would mix two epochs' batches: set "
        f"trainer.steps_per_epoch={max(batches // k, 1) * k} or another accumulation_steps"
    )


class FinetuneSection(_Section):
    """Freeze layers (glob patterns on names), unfreeze them later, per-layer rates."""

    freeze: list[str] = Field(default_factory=list)
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


class NamedSpec(_Section):
    """A loss or metric with arguments: a Keras name or import path, and its `params`."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class CallbackSpec(_Section):
    class_path: str = Field(description="import path of a keras.callbacks.Callback subclass")
    init_args: dict[str, Any] = Field(default_factory=dict)


class TrackingSection(_Section):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///mlflow.db")
    experiment: str = Field("default", min_length=1)
    run_name: str | None = None
    tensorboard_dir: str = "runs"
    system_metrics_every_s: float = Field(
        10.0, ge=0.0, description="CPU, memory, disk, network, GPU sampling; 0 turns it off"
    )
    system_metrics_scope: Literal["host", "own"] = Field(
        "host",
        description="host: the whole machine (MLflow's own); own: this run's processes, its "
        "CPU cores and the GPUs in CUDA_VISIBLE_DEVICES (every search trial)",
    )


class CheckpointSection(_Section):
    """Where and when the run's whole state is saved, and which checkpoints are kept."""

    dir: str = Field(
        "checkpoints/{experiment}/{run_id}",
        min_length=1,
        description="{experiment} and {run_id} are filled in; one run's checkpoints only",
    )
    every_n_steps: int | None = Field(None, ge=1, description="optimizer updates")
    every_n_epochs: int | None = Field(1, ge=1)
    every_n_minutes: float | None = Field(None, gt=0)
    keep_last: int = Field(2, ge=1)
    keep_best: int = Field(0, ge=0, description="the best by monitor, kept besides the last")
    monitor: str | None = Field(
        None,
        description="an epoch metric, e.g. val_loss: the best checkpoint by it is kept and "
        "exported as best_model",
    )
    mode: Literal["min", "max"] = "min"
    keep_every_n_epochs: int | None = Field(None, ge=1, description="kept permanently")
    mirror_to_mlflow: bool = Field(
        False, description="upload each checkpoint as artifacts checkpoint/latest/"
    )

    @model_validator(mode="after")
    def _best_needs_monitor(self) -> CheckpointSection:
        try:
            self.dir.format(experiment="e", run_id="r")
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"checkpoint.dir '{self.dir}' has a placeholder other than {{experiment}} and "
                f"{{run_id}} ({error!r}): use those two only, e.g. "
                "checkpoint.dir=checkpoints/{experiment}/{run_id}"
            ) from None
        if self.keep_best and not self.monitor:
            raise ValueError(
                f"checkpoint.keep_best ({self.keep_best}) keeps the best checkpoints by "
                "checkpoint.monitor, which is not set: name an epoch metric, e.g. "
                "checkpoint.monitor=val_loss"
            )
        return self


class ExperimentConfig(_Section):
    """A whole experiment: what to train, on what, how, and where it is tracked."""

    model: ModelSection
    data: DataSection
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    schedule: ScheduleSection | None = None
    plateau: PlateauSection | None = None
    ema: EmaSection | None = None
    finetune: FinetuneSection | None = None
    loss: str | NamedSpec
    metrics: list[str | NamedSpec] = Field(default_factory=list)
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    callbacks: list[CallbackSpec] = Field(default_factory=list)
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    search: SearchSection | None = Field(None, description="what `harness search` explores")


_PARAM_KEY = re.compile(r"[\w\-. :/]+")  # what MLflow allows in a param's name


def flatten(config: ExperimentConfig) -> dict[str, str]:
    """Dotted `section.key` params for MLflow, e.g. `{"optimizer.learning_rate": "0.001"}`.

    Null values and empty mappings are left out (MLflow would show "None", "{}"); the loss is
    `loss.name`, so it cannot be mistaken for the `loss` metric beside it.
    """
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and not all(map(_PARAM_KEY.fullmatch, value)):
            # Keys MLflow cannot name a param by (glob patterns: "conv*"): one JSON param.
            flat[prefix] = json.dumps(value)
        elif isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list) and value and any(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        elif value is not None and value != {}:
            flat[prefix] = str(value)

    dumped = redact_all(config.model_dump(mode="json"))  # no password of a URL
    if isinstance(dumped.get("loss"), str):
        dumped["loss"] = {"name": dumped["loss"]}
    walk("", dumped)
    return flat
