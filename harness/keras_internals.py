"""The few private Keras pieces the harness reuses, and the optimizer patching, in one place.

The loop mirrors `keras.Model.fit` event for event, so a few of Keras's own helpers are reused
rather than re-implemented: the loss tracker and loss wrapper of the train step, the per-replica
reduction, the symbolic build, the data adapters that run a `PyDataset`'s workers and peek at a
generator, the initial epoch `BackupAndRestore` sets, the pending async callback calls, and the
global seed generators (Keras's, and TensorFlow's `tf.random.Generator`).

The gradient pipeline (`harness.step.gradients`) stands in front of the optimizer's `apply`
while a step is traced, so every route to an update passes it: Keras's `train_step`, a user's
override and our GradientTape step alike. The patches that do this — `apply` itself, the
rate an update applies, per-variable rates, summing replicas' gradients on the way in — are
here too, each a context manager that leaves the optimizer as it was.

Keras is pinned to a minor version in `pyproject.toml`; if these move, only this module
changes, and `tests/harness/test_keras_internals.py` names what broke.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from keras.src import backend as _backend
from keras.src.backend.common import global_state as _global_state
from keras.src.backend.tensorflow.trainer import reduce_per_replica
from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.random import seed_generator as _seed_generator
from keras.src.trainers.data_adapters.generator_data_adapter import GeneratorDataAdapter
from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

__all__ = [
    "GeneratorDataAdapter",
    "applying_learning_rate",
    "inner_optimizer",
    "learning_rate_schedule",
    "routing_apply",
    "summing_replicas_on_entry",
    "PyDatasetAdapter",
    "compute_loss",
    "drain_callbacks",
    "exclude_from_weight_decay",
    "global_seed_state",
    "initial_epoch",
    "loss_tracker",
    "optimizer_variables",
    "reduce_per_replica",
    "scaling_learning_rates",
    "set_global_seed_state",
    "symbolic_build",
    "tf_global_generator",
    "unscale_loss_for_distribution",
    "variable_index",
    "variable_key",
]


def symbolic_build(model: Any, data_spec: Any) -> None:
    """Build the model, its compiled loss and metrics and the optimizer from a batch's spec.

    `data_spec` is a structure of anything with `shape` and `dtype` (a `tf.data` element
    spec), so no batch has to be read, and no iterator created, to build.
    """
    with model.distribute_strategy.scope():
        model._symbolic_build(data_batch=data_spec)


def compute_loss(
    model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any, *, training: bool
) -> Any:
    """`model.compute_loss`, also for user overrides with the pre-3.3 signature (no `training`)."""
    return model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )


@contextmanager
def applying_learning_rate(optimizer: Any, value: Any) -> Iterator[None]:
    """Inside the block, the optimizer's updates apply `value` as their learning rate.

    `optimizer.learning_rate` evaluates a schedule each time it is read (in `apply`, and
    again for weight decay); the step reads it once, logs that value and has the update
    apply the same tensor, so the logged rate is the applied one and the schedule runs once
    per step. A loss-scale wrapper reads its inner optimizer's rate.
    """
    inner = inner_optimizer(optimizer)
    inner._get_current_learning_rate = lambda: value
    try:
        yield
    finally:
        del inner._get_current_learning_rate


def inner_optimizer(optimizer: Any) -> Any:
    """The optimizer that applies unscaled gradients: inside a `LossScaleOptimizer`, the one
    it wraps; any other optimizer itself."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def learning_rate_schedule(optimizer: Any) -> Any | None:
    """The `LearningRateSchedule` the optimizer steps, or None for a fixed rate."""
    from keras.optimizers.schedules import LearningRateSchedule

    schedule = getattr(inner_optimizer(optimizer), "_learning_rate", None)
    return schedule if isinstance(schedule, LearningRateSchedule) else None


@contextmanager
def routing_apply(optimizer: Any, apply: Callable[[Any, Any, Any], None]) -> Iterator[None]:
    """Inside the block, `optimizer.apply(grads, variables)` calls
    `apply(original_apply, grads, variables)` instead (`variables` may be None)."""
    original = optimizer.apply

    def routed(grads: Any, trainable_variables: Any = None) -> None:
        apply(original, grads, trainable_variables)

    optimizer.apply = routed
    try:
        yield
    finally:
        optimizer.__dict__.pop("apply", None)


@contextmanager
def summing_replicas_on_entry(
    optimizer: Any, sum_over_replicas: Callable[[list[Any]], list[Any]]
) -> Iterator[None]:
    """Inside the block, the gradients reaching `optimizer.apply` (the outer one under loss
    scaling) are first summed over the replicas by `sum_over_replicas`, and the inner
    optimizer does not sum them again (Keras sums inside its update, after clipping)."""
    inner, entry = inner_optimizer(optimizer), optimizer.apply

    def summed_apply(grads: Any, trainable_variables: Any = None) -> None:
        entry(sum_over_replicas(list(grads)), trainable_variables)

    optimizer.apply = summed_apply
    inner._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)
    try:
        yield
    finally:
        optimizer.__dict__.pop("apply", None)
        inner.__dict__.pop("_all_reduce_sum_gradients", None)


def optimizer_variables(optimizer: Any) -> list[Any]:
    """The trainable variables the optimizer was built on (its slots are indexed by them)."""
    return list(optimizer._trainable_variables)


def variable_index(optimizer: Any, variable: Any) -> int:
    """The position of `variable` among `optimizer_variables(optimizer)`."""
    return int(optimizer._get_variable_index(variable))


def variable_key(optimizer: Any, variable: Any) -> Any:
    """The key the optimizer knows a variable by (a Keras variable, its `tf.Variable`, or a
    distributed one's container: all the same key)."""
    return optimizer._var_key(variable)


def exclude_from_weight_decay(optimizer: Any, variables: list[Any]) -> None:
    """`optimizer.exclude_from_weight_decay(var_list=variables)`, also once it is built."""
    optimizer._exclude_from_weight_decay = {optimizer._var_key(v) for v in variables}
    optimizer._exclude_from_weight_decay_pattern = None
    optimizer._exclude_from_weight_decay_cache = {}


@contextmanager
def scaling_learning_rates(
    optimizer: Any, multipliers: Sequence[tuple[Any, float]]
) -> Iterator[None]:
    """Inside the block, each `(variable, m)`'s update and decoupled decay apply rate × m.

    `update_step(gradient, variable, learning_rate)` gets the scaled rate; the decay, which
    reads `optimizer.learning_rate` itself, runs per group of equal multipliers with the rate
    scaled (inside `applying_learning_rate`, the step's rate).
    """
    factors = {optimizer._var_key(v): float(m) for v, m in multipliers}
    update_step, decay = optimizer.update_step, optimizer._apply_weight_decay

    def scaled_update_step(gradient: Any, variable: Any, learning_rate: Any) -> Any:
        factor = factors.get(optimizer._var_key(variable))
        if factor is not None:
            learning_rate = learning_rate * factor
        return update_step(gradient, variable, learning_rate)

    def scaled_decay(variables: Any) -> None:
        groups: dict[float, list[Any]] = {}
        for variable in variables:
            groups.setdefault(factors.get(optimizer._var_key(variable), 1.0), []).append(variable)
        had_rate = "_get_current_learning_rate" in vars(optimizer)
        rate = optimizer._get_current_learning_rate
        try:
            for factor, group in groups.items():
                optimizer._get_current_learning_rate = lambda f=factor: rate() * f
                decay(group)
        finally:
            if had_rate:
                optimizer._get_current_learning_rate = rate
            else:
                del optimizer._get_current_learning_rate

    optimizer.update_step, optimizer._apply_weight_decay = scaled_update_step, scaled_decay
    try:
        yield
    finally:
        del optimizer.update_step, optimizer._apply_weight_decay


def loss_tracker(model: Any) -> Any:
    """The `Mean` metric `fit()` reports as `loss`."""
    return model._loss_tracker


def initial_epoch(model: Any) -> int | None:
    """The epoch `BackupAndRestore` restored in `on_train_begin`, or None."""
    return model._initial_epoch


def drain_callbacks(callbacks: Any) -> None:
    """Wait for a `CallbackList`'s pending async batch calls and stop its worker threads.

    `on_train_end` does this when training ends normally; after an error or an interruption
    the loop calls this instead, so no metric logged from a worker thread is lost when the
    sinks close. Errors of those calls are re-raised here.
    """
    try:
        callbacks._flush_futures()
    finally:
        executor, callbacks._executor = callbacks._executor, None
        if executor is not None:
            executor.shutdown()


def global_seed_state() -> Any | None:
    """The state of Keras's global `SeedGenerator` (unseeded random ops), if one exists."""
    generator = _global_state.get_global_attribute(_seed_generator.GLOBAL_SEED_GENERATOR)
    return None if generator is None else _backend.convert_to_numpy(generator.state.value)


def set_global_seed_state(state: Any | None) -> None:
    """Restore what `global_seed_state` returned (None: no global generator exists)."""
    if state is None:
        _global_state.set_global_attribute(_seed_generator.GLOBAL_SEED_GENERATOR, None)
        return
    _seed_generator.global_seed_generator().state.assign(state)


def tf_global_generator() -> Any | None:
    """TensorFlow's global `tf.random.Generator` if something created it, else None.

    `tf.random.get_global_generator()` would create one, which op determinism forbids.
    """
    from tensorflow.python.ops import stateful_random_ops

    return getattr(stateful_random_ops, "global_generator", None)
