"""The GradientTape steps of `engine: custom`: one batch each, the same logs as `fit()`.

The gradients go to `optimizer.apply_gradients`, like Keras's own `train_step`; what happens
to them there (the gradient pipeline) and after the update (the EMA) is the same in both
engines: see `harness.step`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from harness import keras_internals

Logs = dict[str, Any]
Step = Callable[[Any], Logs]


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


def make_train_step(model: keras.Model) -> Step:
    """One optimisation step on one batch, reporting the same logs as `fit()`."""
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
        # Through the gradient pipeline, which stands in front of `apply` while this traces.
        optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


def make_test_step(model: keras.Model) -> Step:
    """One evaluation step on one batch, reporting the same logs as `evaluate()`."""

    def test_step(data: Any) -> Logs:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = model(x, training=False)
        _tracked_loss(model, x, y, y_pred, sample_weight, training=False)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return test_step
