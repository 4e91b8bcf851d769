"""Everything bad input can break, resolved before a run exists: names, data, model, compile."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments import registry
from experiments.config import ExperimentConfig
from experiments.errors import UsageError
from experiments.schedule_setup import build_learning_rate, build_plateau


@dataclass
class Prepared:
    """A validated experiment, ready to train."""

    config: ExperimentConfig
    model: Any
    data: Any
    callbacks: list[Any] = field(default_factory=list)
    sample_input: Any | None = None  # a few real model inputs, None for generators
    ema: Any | None = None  # harness.ema.WeightAverage when `ema:` is set


def prepare(config: ExperimentConfig) -> Prepared:
    """Resolve names, build data and model, compile; raises UsageError on bad input."""
    from harness import DataError, prepare_data, seed_everything
    from harness.devices import enable_memory_growth

    enable_memory_growth()  # before anything allocates on a GPU

    model_factory = registry.resolve_factory(config.model.name, registry.MODELS, what="model.name")
    data_factory = registry.resolve_factory(config.data.name, registry.DATASETS, what="data.name")
    opt = config.optimizer
    registry.build_optimizer(opt.name, opt.learning_rate, opt.params)  # bad names fail early
    loss = registry.resolve_loss(config.loss)
    metrics = [registry.resolve_metric(name, i) for i, name in enumerate(config.metrics)]
    callbacks = [
        registry.build_callback(spec.class_path, spec.init_args, i)
        for i, spec in enumerate(config.callbacks)
    ]
    seed_everything(config.trainer.seed, deterministic=config.trainer.deterministic)
    source = _call_factory(data_factory, config.data.params, what="data")
    try:
        data = prepare_data(
            source,
            batch_size=config.data.batch_size,
            validation_split=config.data.validation_split,
            shuffle=config.data.shuffle,
            drop_remainder=config.data.drop_remainder,
            seed=config.trainer.seed,
        )
    except DataError as error:
        raise UsageError(f"data ({config.data.name}): {error}") from None
    _check_steps_per_epoch(data.train, config)
    steps_per_epoch = config.trainer.steps_per_epoch or getattr(data.train, "num_batches", None)
    learning_rate = build_learning_rate(config, steps_per_epoch)
    optimizer = registry.build_optimizer(opt.name, learning_rate, opt.params)
    plateau = build_plateau(config, learning_rate)
    if plateau is not None:
        callbacks.insert(0, plateau)  # before the user's callbacks and the logger see the logs
    sample_input = data.peek_input()
    model = _call_factory(model_factory, config.model.params, what="model")
    _check_model_fits_data(model, sample_input, config)
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        steps_per_execution=config.trainer.steps_per_execution,
        jit_compile=config.trainer.jit_compile,
    )
    _check_tensorboard_dir(Path(config.tracking.tensorboard_dir))
    ema = None
    if config.ema is not None:
        from harness.ema import WeightAverage

        settings = config.ema.model_dump(exclude={"snapshot_every_n_epochs"})
        ema = WeightAverage(model, **settings)
    return Prepared(config, model, data, callbacks, sample_input, ema)


def _call_factory(factory: Any, params: dict[str, Any], *, what: str) -> Any:
    try:
        return factory(**params)
    except (TypeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UsageError(
            f"{what}.params: {getattr(factory, '__name__', factory)} rejected {params}: "
            f"{first_line}. Use the factory's own argument names and valid values"
        ) from None


def _check_steps_per_epoch(train: Any, config: ExperimentConfig) -> None:
    from harness.data import GeneratorSource

    if isinstance(train, GeneratorSource) and not config.trainer.steps_per_epoch:
        raise UsageError(
            f"data ({config.data.name}) is a generator, which has no length: set "
            "trainer.steps_per_epoch (e.g. trainer.steps_per_epoch=100)"
        )


def _check_model_fits_data(model: Any, sample: Any, config: ExperimentConfig) -> None:
    """Run the model on two real inputs now, so a shape mismatch is bad input, not a crash."""
    if sample is None:
        return
    import tensorflow as tf

    try:
        model(tf.nest.map_structure(lambda part: part[:2], sample), training=False)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        first_line = str(error).strip().splitlines()[0][:300]
        raise UsageError(
            f"model ({config.model.name}) does not accept the inputs of data "
            f"({config.data.name}): {first_line}. Make model.params (e.g. input_shape) match "
            "the data"
        ) from None


def _check_tensorboard_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"tracking.tensorboard_dir: cannot create '{directory}' ({error.strerror}). "
            "Point it at a writable directory, e.g. tracking.tensorboard_dir=runs"
        ) from None
