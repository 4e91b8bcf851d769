"""Mixed precision in both engines: the policy the model is built in, float32 outputs, and
dynamic loss scaling that halves on an overflowing batch and updates nothing there."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest

from harness import prepare_data, train
from harness.callbacks import MetricsLogger
from harness.precision import dtype_policy, float16_outputs, loss_scale, returns_float16
from tests.harness.problems import digits, weights
from tracking import InMemorySink

ENGINES = ["fit", "custom"]


def _model(precision: str, *, loss: Any = "mse", outputs: int = 1) -> keras.Model:
    keras.utils.set_random_seed(3)
    with dtype_policy(precision):
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(16, activation="tanh", name="hidden"),
                keras.layers.Dense(outputs, name="out", dtype="float32"),
            ]
        )
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
    return model


def test_the_policy_applies_to_the_layers_built_inside_and_is_put_back() -> None:
    before = keras.config.dtype_policy().name
    model = _model("mixed_float16")
    assert keras.config.dtype_policy().name == before == "float32"
    hidden, out = model.get_layer("hidden"), model.get_layer("out")
    assert (hidden.compute_dtype, hidden.variable_dtype) == ("float16", "float32")
    assert out.compute_dtype == "float32" and float16_outputs(model) == []
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    with dtype_policy("mixed_bfloat16"):
        low = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="last")])
    assert low.get_layer("last").compute_dtype == "bfloat16"
    assert float16_outputs(low) != []  # a 16-bit final layer is reported
    low.compile(optimizer="sgd", loss="mse")
    assert loss_scale(low.optimizer) is None  # bfloat16: no loss scaling


def test_a_loss_computing_float16_is_detected() -> None:
    y = np.zeros((2, 1), "float32")
    pred = keras.ops.ones((2, 1), "float32")
    assert not returns_float16(keras.losses.MeanSquaredError(), y, pred)
    assert returns_float16(lambda t, p: keras.ops.cast(p - t, "float16") ** 2, y, pred)


def _regression_data(*, overflow_first: bool) -> Any:
    x, _ = digits(64)
    y = (x[:, :1] / 16.0).astype("float32")
    if overflow_first:
        # A target this far off makes the scaled gradient at the float16 hidden layer
        # (about 2·1e5 · 2^15 · |w|) exceed float16's 65504: an overflow, not a NaN loss.
        y[:16] = 1e5
    return prepare_data((x, y), batch_size=16, shuffle=False)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_overflowing_batch_halves_the_loss_scale_and_updates_nothing(engine: str) -> None:
    model = _model("mixed_float16")
    optimizer = model.optimizer
    initial = float(optimizer.initial_scale)
    train(model, _regression_data(overflow_first=True), engine=engine, epochs=1, steps_per_epoch=1)
    assert float(optimizer.dynamic_scale.numpy()) == initial / 2
    assert int(optimizer.iterations.numpy()) == 0
    reference = _model("mixed_float16")  # the same seed: the weights before any update
    for got, want in zip(weights(model), weights(reference), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("engine", ENGINES)
def test_mixed_float16_trains_and_logs_the_loss_scale_at_each_update(engine: str) -> None:
    model = _model("mixed_float16")
    sink = InMemorySink()
    history = train(
        model,
        _regression_data(overflow_first=True),
        engine=engine,
        epochs=2,
        callbacks=[MetricsLogger(sink, log_every_n_steps=1)],
    )
    # 4 batches an epoch, the first of each overflows: 3 updates an epoch, and each epoch's
    # overflow halves the scale the next updates (logged at their own steps) run with.
    scales = {step: value for name, value, step in sink.metrics if name == "step/loss_scale"}
    initial = float(model.optimizer.initial_scale)
    assert int(model.optimizer.iterations.numpy()) == 6
    assert scales == {
        1: initial / 2,
        2: initial / 2,
        3: initial / 2,
        4: initial / 4,
        5: initial / 4,
        6: initial / 4,
    }
    assert all(w.dtype == "float32" for w in model.trainable_variables)
    assert all(np.isfinite(w.numpy()).all() for w in model.trainable_variables)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.parametrize("engine", ENGINES)
def test_mixed_bfloat16_trains_without_loss_scaling(engine: str) -> None:
    model = _model("mixed_bfloat16")
    sink = InMemorySink()
    train(
        model,
        _regression_data(overflow_first=False),
        engine=engine,
        epochs=1,
        callbacks=[MetricsLogger(sink, log_every_n_steps=1)],
    )
    assert int(model.optimizer.iterations.numpy()) == 4
    assert not any(name == "step/loss_scale" for name, _, _ in sink.metrics)
    assert model.get_layer("hidden").compute_dtype == "bfloat16"
