"""The gradient pipeline in both engines: accumulation against one larger batch, the gradient
norm against a tape of our own, and the three NaN policies on data that is NaN at a known step."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import prepare_data, train
from harness.callbacks import MetricsLogger
from harness.step.ema import WeightAverage
from harness.step.gradients import GradientPipeline, NonFiniteGradients
from tests.harness.problems import digits, weights
from tracking import InMemorySink

ENGINES = ["fit", "custom"]


def _model(*, seed: int = 1, optimizer: Any = None) -> keras.Model:
    """An MLP without batch-dependent layers, so one batch of 32 equals four of 8."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _decaying_adam() -> keras.optimizers.Optimizer:
    # Decays every update and clips: a schedule or a clip that saw micro-batches would differ.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=2, decay_rate=0.5)
    return keras.optimizers.Adam(schedule, global_clipnorm=0.5)


def _values(sink: InMemorySink, key: str) -> dict[int, float]:
    return {step: value for name, value, step in sink.metrics if name == key}


def _accumulating(
    engine: str, data: Any, *, batch_size: int, k: int, epochs: int, ema: bool = False
) -> tuple[keras.Model, WeightAverage | None, InMemorySink]:
    """Train a fresh model on `data` in batches of `batch_size`, k of them an update, every
    step logged; the model, its EMA (with `ema`) and what was logged."""
    model = _model(optimizer=_decaying_adam())
    average = WeightAverage(model, decay=0.9) if ema else None
    sink = InMemorySink()
    train(
        model,
        prepare_data(data, batch_size=batch_size, shuffle=False),
        engine=engine,
        epochs=epochs,
        ema=average,
        gradients=GradientPipeline(model, accumulation_steps=k),
        callbacks=[MetricsLogger(sink, log_every_n_steps=1)],
    )
    return model, average, sink


@pytest.mark.parametrize("engine", ENGINES)
def test_four_micro_batches_of_8_update_as_one_batch_of_32(engine: str) -> None:
    data = digits(256)
    one, one_ema, one_sink = _accumulating(engine, data, batch_size=32, k=1, epochs=2, ema=True)
    acc, acc_ema, acc_sink = _accumulating(engine, data, batch_size=8, k=4, epochs=2, ema=True)
    assert int(acc.optimizer.iterations) == int(one.optimizer.iterations) == 16  # updates
    for got, want in zip(weights(acc), weights(one), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # Adam: float noise
    assert acc_ema is not None and one_ema is not None
    assert int(acc_ema.updates.numpy()) == int(one_ema.updates.numpy()) == 16
    for got, want in zip(acc_ema.shadows, one_ema.shadows, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
    # Schedules and step metrics count updates: the same steps, rates and norms in both.
    assert sorted(_values(acc_sink, "step/learning_rate")) == list(range(1, 17))
    assert _values(acc_sink, "step/learning_rate") == _values(one_sink, "step/learning_rate")
    np.testing.assert_allclose(
        list(_values(acc_sink, "step/grad_norm").values()),
        list(_values(one_sink, "step/grad_norm").values()),
        rtol=1e-5,
    )
    # An update's batch values are those of all its micro-batches: the batch of 32.
    for key in ("step/batch_loss", "step/batch_accuracy"):
        assert sorted(_values(acc_sink, key)) == list(range(1, 17))
        np.testing.assert_allclose(
            list(_values(acc_sink, key).values()), list(_values(one_sink, key).values()), rtol=1e-5
        )


@pytest.mark.parametrize("engine", ENGINES)
def test_an_epoch_that_k_does_not_divide_ends_with_a_shorter_update(engine: str) -> None:
    """7 micro-batches of 8 with k=2 (windows of 2, 2, 2, 1) update as batches of 16 whose
    last holds 8: the short window applies the mean of the micro-batches it has."""
    data = digits(56)
    one, _, one_sink = _accumulating(engine, data, batch_size=16, k=1, epochs=3)
    acc, _, acc_sink = _accumulating(engine, data, batch_size=8, k=2, epochs=3)
    assert int(acc.optimizer.iterations) == int(one.optimizer.iterations) == 12  # 4 an epoch
    for got, want in zip(weights(acc), weights(one), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert _values(acc_sink, "step/learning_rate") == _values(one_sink, "step/learning_rate")
    for key in ("step/batch_loss", "step/batch_accuracy", "step/grad_norm"):
        assert sorted(_values(acc_sink, key)) == list(range(1, 13))
        np.testing.assert_allclose(
            list(_values(acc_sink, key).values()), list(_values(one_sink, key).values()), rtol=1e-5
        )


@pytest.mark.parametrize("engine", ENGINES)
def test_grad_norm_is_logged_before_clipping_and_the_update_is_clipped(engine: str) -> None:
    x, y = digits(32)
    model = _model(optimizer=keras.optimizers.SGD(1.0, global_clipnorm=0.01))
    start = [v.numpy().copy() for v in model.trainable_variables]
    with tf.GradientTape() as tape:  # the reference: our own tape on the same batch
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    expected = float(tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables)))
    sink = InMemorySink()
    data = prepare_data((x, y), batch_size=32, shuffle=False)
    train(model, data, engine=engine, callbacks=[MetricsLogger(sink, log_every_n_steps=1)])
    assert expected > 0.1  # far above the clip norm
    assert _values(sink, "step/grad_norm")[1] == pytest.approx(expected, rel=1e-5)
    moved = [v.numpy() - s for v, s in zip(model.trainable_variables, start, strict=True)]
    assert float(tf.linalg.global_norm(moved)) == pytest.approx(0.01, rel=1e-4)  # clipped


def _poisoned() -> Any:
    """Batch 3 (update 4) holds a NaN sample weight, so its loss and gradients are NaN."""
    x, y = digits(320)
    weight = np.ones(len(x), dtype="float32")
    weight[100] = np.nan
    return prepare_data((x, y, weight), batch_size=32, shuffle=False)


class Snapshots(keras.callbacks.Callback):
    """Weights, optimizer variables and EMA shadows after each batch."""

    def __init__(self, ema: WeightAverage) -> None:
        super().__init__()
        self.ema = ema
        self.after: list[list[np.ndarray]] = []

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        state = [*self.model.variables, *self.model.optimizer.variables, *self.ema.shadows]
        self.after.append([np.array(v.numpy()) for v in state])


def _run_poisoned(engine: str, on_nan: str) -> tuple[Any, ...]:
    model = _model(optimizer=keras.optimizers.Adam(0.01))
    ema = WeightAverage(model, decay=0.9)
    gradients = GradientPipeline(model, on_nan=on_nan)  # type: ignore[arg-type]
    snapshots, sink = Snapshots(ema), InMemorySink()
    callbacks = [snapshots, MetricsLogger(sink, log_every_n_steps=1)]
    error = None
    try:
        train(model, _poisoned(), engine=engine, epochs=2, ema=ema, gradients=gradients,
              callbacks=callbacks)  # fmt: skip
    except NonFiniteGradients as raised:
        error = raised
    return model, ema, gradients, snapshots.after, sink, error


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("engine", ENGINES)
def test_skip_step_leaves_weights_optimizer_and_ema_untouched_and_counts(engine: str) -> None:
    model, _, _, after, sink, error = _run_poisoned(engine, "skip_step")
    assert error is None
    assert _same(after[3], after[2])  # batch 3 changed nothing, iterations included
    assert not _same(after[4], after[3])  # and training went on
    assert int(model.optimizer.iterations) == 20 - 2  # one skipped update per epoch
    skipped = _values(sink, "step/skipped_steps")
    assert skipped[3] == 0 and skipped[4] == 1 and skipped[18] == 2
    assert all(np.isfinite(w).all() for w in weights(model))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("on_nan", ["raise", "stop"])
def test_raise_and_stop_halt_before_the_bad_update_and_name_it(engine: str, on_nan: str) -> None:
    model, ema, gradients, after, _, error = _run_poisoned(engine, on_nan)
    assert (error is not None) == (on_nan == "raise")
    reason = str(error) if error is not None else gradients.halt_reason
    assert reason is not None
    assert "optimizer update 4 are not finite (batch loss=nan" in reason
    assert f"trainer.on_nan={on_nan}" in reason
    # Halted before update 4: whatever ran after it (the loop hears of it asynchronously)
    # applied nothing, so the weights, the optimizer and the EMA are those after update 3.
    final = [*model.variables, *model.optimizer.variables, *ema.shadows]
    assert _same([np.array(v.numpy()) for v in final], after[2])
    assert int(model.optimizer.iterations) == 3
    if on_nan == "stop":
        assert model.stop_training and len(model.history.epoch) == 1


def test_bad_arguments_are_named() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"`accumulation_steps` must be >= 1. Received: .*=0"):
        GradientPipeline(model, accumulation_steps=0)
    with pytest.raises(ValueError, match=r"`on_nan` must be one of raise, stop, skip_step"):
        GradientPipeline(model, on_nan="ignore")  # type: ignore[arg-type]
