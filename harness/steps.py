"""Compiled train and eval steps for the GradientTape engine.

`build_step_function` turns a one-batch step into a `tf.function` that runs several steps per
call (like Keras's `steps_per_execution`), so Python and callback overhead is paid once per
call, not once per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from harness import keras_internals

Logs = dict[str, Any]
StepFunction = Callable[[Any, int], Logs]


def _batch_size(x: Any) -> tf.Tensor:
    first = next(t for t in tf.nest.flatten(x) if t is not None)
    return tf.shape(first)[0]


def _tracked_loss(
    model: keras.Model, x: Any, y: Any, y_pred: Any, sample_weight: Any, *, training: bool
) -> Any:
    """The compiled loss, also averaged into the `loss` metric as `fit()` does."""
    loss = keras_internals.compute_loss(model, x, y, y_pred, sample_weight, training=training)
    keras_internals.loss_tracker(model).update_state(
        keras_internals.unscale_loss_for_distribution(loss), sample_weight=_batch_size(x)
    )
    return loss


def make_train_step(model: keras.Model) -> Callable[[Any], Logs]:
    """One optimisation step on one batch, reporting the same logs as `fit()`.

    Room for fused extras (EMA update, clipping, accumulation) is between
    `apply_gradients` and the metric update.
    """
    optimizer = model.optimizer

    def train_step(data: Any) -> Logs:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = _tracked_loss(model, x, y, y_pred, sample_weight, training=True)
            # Loss scaling is a no-op unless the optimizer is a LossScaleOptimizer.
            scaled_loss = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


def make_test_step(model: keras.Model) -> Callable[[Any], Logs]:
    """One evaluation step on one batch, reporting the same logs as `evaluate()`."""

    def test_step(data: Any) -> Logs:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = model(x, training=False)
        _tracked_loss(model, x, y, y_pred, sample_weight, training=False)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return test_step


def build_step_function(
    model: keras.Model,
    step: Callable[[Any], Logs],
    *,
    jit_compile: bool = False,
    run_eagerly: bool = False,
) -> StepFunction:
    """Compile `step` into `fn(iterator, num_steps) -> logs` running `num_steps` batches.

    Args:
        model: the model whose distribution strategy runs the step.
        step: a one-batch step from `make_train_step` or `make_test_step`.
        jit_compile: compile the one-batch step with XLA.
        run_eagerly: skip `tf.function` entirely (debugging).
    """
    strategy = model.distribute_strategy

    def one_step(data: Any) -> Logs:
        outputs = strategy.run(step, args=(data,))
        return keras_internals.reduce_per_replica(outputs, strategy, reduction="auto")

    if run_eagerly:

        def eager_steps(iterator: Any, num_steps: int) -> Logs:
            logs = one_step(next(iterator))
            for _ in range(num_steps - 1):
                logs = one_step(next(iterator))
            return logs

        return eager_steps

    compiled_step = tf.function(one_step, reduce_retracing=True, jit_compile=jit_compile)

    @tf.function(reduce_retracing=True)
    def several_steps(iterator: Any, num_steps: tf.Tensor) -> Logs:
        logs = compiled_step(iterator.get_next())
        for _ in tf.range(num_steps - 1):
            logs = compiled_step(iterator.get_next())
        return logs

    @tf.function(reduce_retracing=True)
    def single_step(iterator: Any) -> Logs:
        # Reading the batch inside the graph avoids an eager op per step.
        return compiled_step(iterator.get_next())

    def run(iterator: Any, num_steps: int) -> Logs:
        if num_steps == 1:
            return single_step(iterator)
        return several_steps(iterator, tf.constant(num_steps, dtype=tf.int32))

    return run
