"""The typed experiment config: every section validated before anything runs."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field, model_validator

from experiments.config.base import MAX_COUNT, Section
from experiments.config.learning import (
    EmaSection,
    FinetuneSection,
    PlateauSection,
    ScheduleSection,
)
from experiments.config.search_schema import SearchSection
from experiments.config.urls import redact_all


class ModelSection(Section):
    name: str = Field(description="registry name (mlp, cnn, ...) or import path pkg.mod:fn")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the model factory, e.g. {hidden_units: [128, 64]}",
    )


class DataSection(Section):
    name: str = Field(description="registry name (digits, ...) or import path pkg.mod:fn")
    params: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the data factory"
    )
    batch_size: int = Field(
        32,
        ge=1,
        description="examples per batch (the global batch under trainer.distribute: mirrored)",
    )
    validation_split: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="the last fraction of the arrays held out for validation, as Keras splits",
    )
    shuffle: bool = Field(
        True,
        description="reshuffle arrays (and a PyDataset's batch order) every epoch, seeded by "
        "trainer.seed",
    )
    drop_remainder: bool = Field(False, description="drop the last partial batch of an epoch")
    lr_scaling: Literal["none", "linear"] = Field(
        "none", description="linear: rates times batch_size / reference_batch_size"
    )
    reference_batch_size: int | None = Field(
        None,
        ge=1,
        description="the batch size the learning rates were set for; needed by lr_scaling linear",
    )

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


class OptimizerSection(Section):
    name: str = Field(
        "adam", description="any keras.optimizers name (adam, adamw, sgd, ...) or import path"
    )
    learning_rate: float = Field(
        1e-3, gt=0.0, description="the base rate; a schedule starts from it"
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="the optimizer's own arguments (beta_1, momentum, ...)"
    )
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


class TrainerSection(Section):
    engine: Literal["fit", "custom"] = Field(
        "fit",
        description="fit: the model's own train_step through Keras; custom: our GradientTape step",
    )
    epochs: int = Field(
        1, ge=1, le=MAX_COUNT, description="epochs in all (a resumed run's included)"
    )
    steps_per_epoch: int | None = Field(
        None, ge=1, le=MAX_COUNT, description="batches per epoch; required for endless generators"
    )
    validation_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_COUNT,
        description="validation batches per evaluation (default: the whole set)",
    )
    steps_per_execution: int = Field(
        1,
        ge=1,
        description="batches per compiled call, both engines (steps_per_epoch must be a multiple)",
    )
    jit_compile: bool = Field(False, description="compile the step with XLA, both engines")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="NumPy's seeds are 32-bit")
    deterministic: bool = Field(
        False, description="TensorFlow op determinism: the same seed gives the same losses"
    )
    log_every_n_steps: int = Field(
        10, ge=1, description="optimizer updates between logged step/* points"
    )
    progress: Literal["auto", "bar", "lines", "none"] = Field(
        "auto", description="auto (a bar in a terminal, plain lines otherwise), bar, lines or none"
    )
    accumulation_steps: int = Field(
        1,
        ge=1,
        description="micro-batches per optimizer update; an epoch they do not divide ends "
        "with a shorter one",
    )
    on_nan: Literal["raise", "stop", "skip_step"] = Field(
        "raise", description="what a NaN or Inf gradient does: raise, stop, or skip_step"
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        "float32", description="float32, mixed_float16 (dynamic loss scaling) or mixed_bfloat16"
    )
    distribute: Literal["none", "mirrored"] = Field(
        "none", description="none, or mirrored: tf.distribute.MirroredStrategy over trainer.devices"
    )
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
        if self.devices is not None and self.distribute == "none":
            raise ValueError(
                f"trainer.devices ({', '.join(self.devices)}) picks the devices of "
                "trainer.distribute=mirrored, and trainer.distribute is none: set "
                "trainer.distribute=mirrored, or drop trainer.devices"
            )
        return self


class NamedSpec(Section):
    """A loss or metric with arguments: a Keras name or import path, and its `params`."""

    name: str = Field(min_length=1, description="a Keras name or import path")
    params: dict[str, Any] = Field(default_factory=dict, description="its arguments")


class CallbackSpec(Section):
    class_path: str = Field(description="import path of a keras.callbacks.Callback subclass")
    init_args: dict[str, Any] = Field(
        default_factory=dict, description="the callback's keyword arguments"
    )


class TrackingSection(Section):
    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///mlflow.db")
    experiment: str = Field(
        "default", min_length=1, description="the MLflow experiment (created when new)"
    )
    run_name: str | None = Field(
        None, description="the MLflow run's name (MLflow picks one when null)"
    )
    tensorboard_dir: str = Field(
        "runs", description="TensorBoard files go to <dir>/<experiment>/<run_id>"
    )
    system_metrics_every_s: float = Field(
        10.0, ge=0.0, description="CPU, memory, disk, network, GPU sampling; 0 turns it off"
    )
    system_metrics_scope: Literal["host", "own"] = Field(
        "host",
        description="host: the whole machine (MLflow's own); own: this run's processes, its "
        "CPU cores and the GPUs in CUDA_VISIBLE_DEVICES (every search trial)",
    )


class CheckpointSection(Section):
    """Where and when the run's whole state is saved, and which checkpoints are kept."""

    dir: str = Field(
        "checkpoints/{experiment}/{run_id}",
        min_length=1,
        description="{experiment} and {run_id} are filled in; one run's checkpoints only",
    )
    every_n_steps: int | None = Field(None, ge=1, description="optimizer updates")
    every_n_epochs: int | None = Field(1, ge=1, description="epochs between saves")
    every_n_minutes: float | None = Field(None, gt=0, description="minutes between saves")
    keep_last: int = Field(2, ge=1, description="the most recent checkpoints kept")
    keep_best: int = Field(0, ge=0, description="the best by monitor, kept besides the last")
    monitor: str | None = Field(
        None,
        description="an epoch metric, e.g. val_loss: the best checkpoint by it is kept and "
        "exported as best_model",
    )
    mode: Literal["min", "max"] = Field(
        "min", description="min or max: which way monitor is better"
    )
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


class ExperimentConfig(Section):
    """A whole experiment: what to train, on what, how, and where it is tracked."""

    model: ModelSection = Field(description="what to train")
    data: DataSection = Field(description="what to train on")
    optimizer: OptimizerSection = Field(
        default_factory=OptimizerSection, description="how the weights are updated"
    )
    schedule: ScheduleSection | None = Field(
        None, description="the learning rate of each update (optional)"
    )
    plateau: PlateauSection | None = Field(
        None, description="a multiplier on the rate, lowered when a metric stalls (optional)"
    )
    ema: EmaSection | None = Field(
        None,
        description="an exponential moving average of the weights, evaluated as val_ema_* "
        "(optional)",
    )
    finetune: FinetuneSection | None = Field(
        None, description="freeze, unfreeze and scale layers by name (optional)"
    )
    loss: str | NamedSpec = Field(
        description="a Keras name or import path, or {name: ..., params: {...}}"
    )
    metrics: list[str | NamedSpec] = Field(
        default_factory=list,
        description="Keras names or import paths, or {name: ..., params: {...}}",
    )
    trainer: TrainerSection = Field(default_factory=TrainerSection, description="how training runs")
    callbacks: list[CallbackSpec] = Field(
        default_factory=list, description="any Keras callbacks, by import path, in either engine"
    )
    tracking: TrackingSection = Field(
        default_factory=TrackingSection, description="where the run is tracked"
    )
    checkpoint: CheckpointSection = Field(
        default_factory=CheckpointSection,
        description="when the run's whole state is saved, and what is kept",
    )
    search: SearchSection | None = Field(None, description="what `harness search` explores")


_PARAM_KEY = re.compile(r"[\w\-. :/]+")  # what MLflow allows in a param's name


def flatten(config: ExperimentConfig) -> dict[str, str]:
    """Dotted `section.key` params for MLflow, e.g. `{"optimizer.learning_rate": "0.001"}`.

    Null values, empty mappings and empty lists are left out (MLflow would show "None", "{}",
    "[]", and the UI's compare view would plot them first); the loss is
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
        elif value is not None and value != {} and value != []:
            flat[prefix] = str(value)

    dumped = redact_all(config.model_dump(mode="json"))  # no password of a URL
    if isinstance(dumped.get("loss"), str):
        dumped["loss"] = {"name": dumped["loss"]}
    walk("", dumped)
    return flat
