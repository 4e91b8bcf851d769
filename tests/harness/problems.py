"""Tiny seeded problems and helpers shared by the harness tests."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from harness.data import TrainingData, prepare_data


def digits(limit: int = 400) -> tuple[np.ndarray, np.ndarray]:
    from experiments.zoo.datasets import load_digits

    return load_digits(limit)


def make_model(
    *,
    seed: int = 1,
    steps_per_execution: int = 1,
    learning_rate: Any = 0.01,
    optimizer: str | keras.optimizers.Optimizer = "adam",
    dropout: float = 0.0,
    metrics: list[Any] | None = None,
) -> keras.Model:
    keras.utils.set_random_seed(seed)
    layers: list[Any] = [keras.Input((64,)), keras.layers.Dense(16, activation="relu")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    model = keras.Sequential([*layers, keras.layers.Dense(10)])
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(
            {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
        )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"] if metrics is None else metrics,
        steps_per_execution=steps_per_execution,
    )
    return model


def make_data(*, batch_size: int = 32, limit: int = 400, seed: int = 3) -> TrainingData:
    """300 training examples (10 batches of 32), 100 for validation; shuffled every pass."""
    return prepare_data(digits(limit), batch_size=batch_size, validation_split=0.25, seed=seed)


def weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.weights]


def assert_same_weights(actual: keras.Model, expected: keras.Model) -> None:
    """Bit for bit."""
    for got, want in zip(weights(actual), weights(expected), strict=True):
        np.testing.assert_array_equal(got, want)


class EventRecorder(keras.callbacks.Callback):
    """Every event with its index and the sorted keys of its logs, plus the params."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[Any, ...]] = []

    def _record(self, name: str, index: Any, logs: dict[str, Any] | None) -> None:
        self.events.append((name, index, tuple(sorted(logs or {}))))

    def on_train_begin(self, logs=None):
        params = {k: v for k, v in self.params.items() if k in ("epochs", "steps", "verbose")}
        self.events.append(("params", tuple(sorted(params.items()))))
        self._record("train_begin", None, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._record("epoch_begin", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._record("train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._record("train_batch_end", batch, logs)

    def on_test_begin(self, logs=None):
        self._record("test_begin", None, logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._record("test_batch_begin", batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._record("test_batch_end", batch, logs)

    def on_test_end(self, logs=None):
        self._record("test_end", None, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._record("epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        self._record("train_end", None, logs)

    def count(self, name: str) -> int:
        return sum(1 for event in self.events if event[0] == name)
