"""MirroredStrategy over the CPU split in two (tests/conftest.py), in both engines: a mirrored
run matches the single-device run of the same global batch, with accumulation, clipping,
decoupled weight decay, a per-update schedule and EMA all on; the state is one model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import prepare_data, train
from harness.callbacks import MetricsLogger
from harness.devices import mirrored_strategy
from harness.precision import dtype_policy
from harness.step.ema import WeightAverage
from harness.step.gradients import GradientPipeline
from tests.harness.problems import digits, weights
from tracking import InMemorySink

ENGINES = ["fit", "custom"]
TWO_CPUS = ["CPU:0", "CPU:1"]


def _run(engine: str, strategy: Any, *, batch_size: int, k: int, precision: str) -> Any:
    keras.utils.set_random_seed(1)
    with strategy.scope(), dtype_policy(precision):
        model = keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(16, activation="tanh"),
                keras.layers.Dense(10, dtype="float32"),
            ]
        )
        schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)
        # The clip binds (norms ≈ 0.7): clipping one replica's share would differ.
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.01, global_clipnorm=0.5)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        ema = WeightAverage(model, decay=0.9)
    x, y = digits(320)
    source = {"train": (x[:256], y[:256]), "validation": (x[256:], y[256:])}
    data = prepare_data(source, batch_size=batch_size, shuffle=False)
    sink = InMemorySink()
    history = train(
        model,
        data,
        engine=engine,
        epochs=2,
        ema=ema,
        gradients=GradientPipeline(model, accumulation_steps=k, on_nan="skip_step"),
        callbacks=[MetricsLogger(sink, log_every_n_steps=1)],
    )
    return model, ema, sink, history.history


def _values(sink: InMemorySink, key: str) -> dict[int, float]:
    return {step: value for name, value, step in sink.metrics if name == key}


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
@pytest.mark.parametrize("engine", ENGINES)
def test_mirrored_over_two_devices_matches_one_device(engine: str, precision: str) -> None:
    one = _run(engine, tf.distribute.get_strategy(), batch_size=32, k=1, precision=precision)
    # Global batch 16 (8 a replica), accumulated twice: updates of 32, as above.
    two = _run(engine, mirrored_strategy(TWO_CPUS), batch_size=16, k=2, precision=precision)
    (model_1, ema_1, sink_1, history_1), (model_2, ema_2, sink_2, history_2) = one, two
    assert model_2.distribute_strategy.num_replicas_in_sync == 2
    # float16 arithmetic rounds differently for batches of 8 and 32.
    tolerance = {"rtol": 1e-4, "atol": 1e-5} if precision == "float32" else {"atol": 2e-3}
    assert int(model_2.optimizer.iterations.numpy()) == 16
    for got, want in zip(weights(model_2), weights(model_1), strict=True):
        np.testing.assert_allclose(got, want, **tolerance)
    for got, want in zip(ema_2.shadows, ema_1.shadows, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), **tolerance)
    # Losses and metrics reduced over both replicas; validation too.
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(history_2[key], history_1[key], rtol=1e-3)
    assert _values(sink_2, "step/learning_rate") == _values(sink_1, "step/learning_rate")
    norms_1, norms_2 = _values(sink_1, "step/grad_norm"), _values(sink_2, "step/grad_norm")
    assert sorted(norms_2) == list(range(1, 17))
    np.testing.assert_allclose(list(norms_2.values()), list(norms_1.values()), rtol=1e-3)
    if precision == "mixed_float16":
        assert set(_values(sink_2, "step/loss_scale").values()) == {2.0**15}


def test_a_mirrored_model_saves_as_one_model(tmp_path: Path) -> None:
    model, _, _, _ = _run(
        "custom", mirrored_strategy(TWO_CPUS), batch_size=16, k=1, precision="float32"
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # outside the strategy: one ordinary model
    assert not isinstance(loaded.weights[0].value, tf.distribute.DistributedValues)
    for got, want in zip(weights(loaded), weights(model), strict=True):
        np.testing.assert_array_equal(got, want)


def test_unknown_or_repeated_devices_are_named() -> None:
    with pytest.raises(ValueError, match=r"'GPU:7' is not a visible device.*CPU:1"):
        mirrored_strategy(["GPU:7"])
    with pytest.raises(ValueError, match="twice"):
        mirrored_strategy(["CPU:0", "/cpu:0"])
