"""Everything bad input can break, resolved before a run exists: names, data, model, compile."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.config.schema import ExperimentConfig
from experiments.errors import UsageError, first_line, user_code_error
from experiments.run.checkpoints import check_checkpoint_dir, check_writable
from experiments.run.plan import RunPlan, plan_run
from experiments.run.schedules import build_learning_rate, build_plateau
from experiments.zoo import registry


@dataclass
class Prepared:
    """A validated experiment, ready to train."""

    config: ExperimentConfig
    plan: RunPlan
    model: Any
    data: Any
    callbacks: list[Any] = field(default_factory=list)
    sample_input: Any | None = None  # a few real model inputs, None for generators
    ema: Any | None = None  # harness.step.ema.WeightAverage when `ema:` is set
    gradients: Any | None = None  # harness.step.gradients.GradientPipeline
    parameter_counts: dict[str, int] = field(default_factory=dict)


def prepare(config: ExperimentConfig, *, resuming: bool = False) -> Prepared:
    """Resolve names, build data and model, compile; raises UsageError on bad input.

    `resuming`: the run's checkpoint directory exists and holds its checkpoints.
    """
    from harness import DataError, prepare_data, seed_everything
    from harness.devices import enable_memory_growth

    enable_memory_growth()  # before anything allocates on a GPU

    # Names first: a typo is reported before any data is loaded.
    model_factory = registry.resolve_factory(config.model.name, registry.MODELS, what="model.name")
    data_factory = registry.resolve_factory(config.data.name, registry.DATASETS, what="data.name")
    registry.resolve_optimizer(config.optimizer.name)
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
    plan = plan_run(config, data.train)
    learning_rate = build_learning_rate(config, plan)
    sample_input = data.peek_input()
    from harness.precision import dtype_policy

    # Under a strategy, the model, its optimizer and every variable beside them (EMA shadows,
    # the gradient pipeline's) are created in its scope: mirrored, saved as one model.
    with _strategy(config).scope():
        opt = config.optimizer
        optimizer = registry.build_optimizer(opt.name, learning_rate, opt.optimizer_settings())
        plateau = build_plateau(config, learning_rate)
        if plateau is not None:
            callbacks.insert(0, plateau)  # before the user's callbacks and the logger see logs
        with dtype_policy(config.trainer.precision):  # layers take the policy they are built in
            model = _call_factory(model_factory, config.model.params, what="model")
        _check_model_fits_data(model, sample_input, data.train.element_spec, config)
        _check_labels_and_scores(model, loss, metrics, data.train, config)
        _check_precision(model, loss, data.train, config)
        model.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            steps_per_execution=config.trainer.steps_per_execution,
            jit_compile=config.trainer.jit_compile,
        )
        gradients = _finetune_and_gradients(model, config, callbacks)
        _check_tensorboard_dir(Path(config.tracking.tensorboard_dir))
        if not resuming:
            check_checkpoint_dir(config)
        ema = None
        if config.ema is not None:
            from harness.step.ema import WeightAverage

            settings = config.ema.model_dump(exclude={"snapshot_every_n_epochs"})
            ema = WeightAverage(model, **settings)
    from harness.finetune import parameter_counts

    plan = plan.with_step_metrics([_metric_name(m) for m in metrics], gradients.value_names)
    counts = parameter_counts(model)
    return Prepared(config, plan, model, data, callbacks, sample_input, ema, gradients, counts)


def _metric_name(metric: Any) -> str:
    """The key a compiled metric has in the logs: its name, or a function's."""
    if isinstance(metric, str):
        return metric
    return str(getattr(metric, "name", None) or getattr(metric, "__name__", metric))


def _strategy(config: ExperimentConfig) -> Any:
    """The distribution strategy of `trainer.distribute` (the default one for `none`)."""
    import tensorflow as tf

    trainer = config.trainer
    if trainer.distribute == "none":
        return tf.distribute.get_strategy()
    from harness.devices import mirrored_strategy

    try:
        strategy = mirrored_strategy(trainer.devices)
    except ValueError as error:
        raise UsageError(f"trainer.devices: {str(error).removeprefix('`devices`: ')}") from None
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        import warnings

        (device,) = strategy.extended.worker_devices
        warnings.warn(
            f"trainer.distribute=mirrored over one device ({device}) runs as that device "
            "alone would, plus synchronisation. Make more devices visible (GPUs, "
            "CUDA_VISIBLE_DEVICES, trainer.devices) or set trainer.distribute=none",
            stacklevel=3,
        )
    if config.data.batch_size % replicas:
        raise UsageError(
            f"data.batch_size ({config.data.batch_size}) must be a multiple of the {replicas} "
            "devices of trainer.distribute=mirrored (the global batch, split evenly between "
            f"them): set data.batch_size={(config.data.batch_size // replicas + 1) * replicas}"
        )
    return strategy


def _finetune_and_gradients(model: Any, config: ExperimentConfig, callbacks: list[Any]) -> Any:
    """Freeze and unfreeze, per-layer rates, undecayed weights; the gradient pipeline."""
    from harness.finetune import Unfreezer, build_optimizer_for, freeze, layer_multipliers
    from harness.step.gradients import GradientPipeline
    from harness.weight_decay import exclude_from_weight_decay

    section = config.finetune
    try:
        exclude_from_weight_decay(model, config.optimizer.weight_decay_exclude)
        multipliers = layer_multipliers(model, section.layer_lr) if section else []
        if section is not None and section.freeze:
            frozen = freeze(model, section.freeze)
            build_optimizer_for(model, frozen)
            if section.unfreeze_at_epoch is not None:
                callbacks.insert(0, Unfreezer(frozen, at_epoch=section.unfreeze_at_epoch))
    except ValueError as error:
        raise UsageError(str(error)) from None
    trainer = config.trainer
    return GradientPipeline(
        model,
        accumulation_steps=trainer.accumulation_steps,
        on_nan=trainer.on_nan,
        lr_multipliers=multipliers,
    )


def _call_factory(factory: Any, params: dict[str, Any], *, what: str) -> Any:
    name = getattr(factory, "__name__", factory)
    try:
        return factory(**params)
    except (TypeError, ValueError) as error:
        raise UsageError(
            f"{what}.params: {name} rejected {params}: {first_line(error)}. Use the factory's "
            "own argument names and valid values"
        ) from None
    except Exception as error:  # the factory's own code failed
        raise user_code_error(f"{what}: the factory {name}", error, fix="Fix the factory") from None


def _check_model_fits_data(
    model: Any, sample: Any, data_spec: Any, config: ExperimentConfig
) -> None:
    """Run the model on two real inputs now, so a shape mismatch is bad input, not a crash.

    Without a sample (a generator), a zero batch of the data's spec builds the model's
    weights, which freezing, per-layer rates and weight decay pick from.
    """
    import tensorflow as tf

    def zeros(spec: Any) -> Any:
        return tf.zeros([1 if d is None else d for d in spec.shape], spec.dtype)

    if sample is None:
        spec = data_spec[0] if isinstance(data_spec, tuple) else data_spec
        sample = tf.nest.map_structure(zeros, spec)
    try:
        model(tf.nest.map_structure(lambda part: part[:2], sample), training=False)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as error:
        first_line = str(error).strip().splitlines()[0][:300]
        raise UsageError(
            f"model ({config.model.name}) does not accept the inputs of data "
            f"({config.data.name}): {first_line}. Make model.params (e.g. input_shape) match "
            "the data"
        ) from None


def _check_labels_and_scores(
    model: Any, loss: Any, metrics: list[Any], train: Any, config: ExperimentConfig
) -> None:
    """On array data: class indices within the model's outputs (for a sparse categorical
    loss), and the loss and each metric computed on two examples, so what would fail inside
    the first step is bad input instead."""
    arrays = getattr(train, "arrays", None)
    if arrays is None or len(arrays) < 2:
        return  # a stream: its batches are only seen in training
    import keras
    import numpy as np

    x, y = arrays[0], arrays[1]
    outputs = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    name = getattr(config.loss, "name", config.loss)
    if outputs and "sparse_categorical" in _loss_name(loss) and np.issubdtype(y.dtype, np.number):
        bad = np.flatnonzero((y < 0) | (y >= outputs))
        if bad.size:
            raise UsageError(
                f"data ({config.data.name}): loss ({name}) takes class indices in [0, {outputs}) "
                f"for the model's {outputs} outputs, and the training labels hold "
                f"{y.flat[bad[0]].item()!r} (example {bad[0]}). Fix the labels, or the model's "
                "number of classes (model.params)"
            )
    predicted = model(x[:2], training=False)
    targets = y[:2]
    scorers = [("loss", name, keras.losses.get(loss) if isinstance(loss, str) else loss)]
    scorers += [
        (f"metrics[{i}]", getattr(m, "name", m), m)
        for i, m in enumerate(metrics)
        if not isinstance(m, str)  # a Keras name: compile() resolves it from the loss
    ]
    for key, shown, scorer in scorers:
        try:
            if isinstance(scorer, keras.metrics.Metric):
                scorer.update_state(targets, predicted)
                scorer.result()
                scorer.reset_state()
            else:
                scorer(targets, predicted)
        except Exception as error:
            raise user_code_error(
                f"{key} ({shown}) on two examples of data ({config.data.name})",
                error,
                fix=f"Check {key}'s params and that it fits the model's outputs and the labels",
            ) from None


def _loss_name(loss: Any) -> str:
    """A loss's name in snake case, for what kind of labels it takes."""
    import re

    text = loss if isinstance(loss, str) else type(loss).__name__
    if text == "function":
        text = getattr(loss, "__name__", "")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", text).lower()


def _check_precision(model: Any, loss: Any, train: Any, config: ExperimentConfig) -> None:
    """Warn where mixed precision would compute the outputs or the loss in 16 bits."""
    import warnings

    from harness.precision import float16_outputs, returns_float16

    precision = config.trainer.precision
    if precision == "float32":
        return
    low = float16_outputs(model)
    if low:
        warnings.warn(
            f"trainer.precision={precision}: model ({config.model.name}) outputs "
            f"{', '.join(low)} in 16 bits; the loss and its gradients lose precision. Give the "
            "final layer dtype='float32' (e.g. keras.layers.Dense(10, dtype='float32'))",
            stacklevel=3,
        )
    arrays = getattr(train, "arrays", None)
    if precision != "mixed_float16" or arrays is None or len(arrays) < 2:
        return
    x, y = (part[:2] for part in arrays[:2])
    if returns_float16(loss, y, model(x, training=False)):
        name = getattr(config.loss, "name", config.loss)
        warnings.warn(
            f"trainer.precision=mixed_float16: loss ({name}) returns float16, whose "
            "largest value is 65504: a scaled loss overflows and its gradients lose "
            "precision. Compute the loss in float32 (keras.ops.cast(y_pred, 'float32'))",
            stacklevel=3,
        )


def _check_tensorboard_dir(directory: Path) -> None:
    check_writable(directory, key="tracking.tensorboard_dir", example="runs")
