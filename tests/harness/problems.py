"""Tiny seeded problems shared by the harness tests."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from harness.data import TrainingData, prepare_data


def digits(limit: int = 400) -> tuple[np.ndarray, np.ndarray]:
    from experiments.datasets import load_digits

    return load_digits(limit)


def make_model(
    *,
    seed: int = 1,
    steps_per_execution: int = 1,
    learning_rate: Any = 0.01,
    optimizer: str = "adam",
) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=keras.optimizers.get(
            {"class_name": optimizer, "config": {"learning_rate": learning_rate}}
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def make_data(*, batch_size: int = 32, limit: int = 400, seed: int = 3) -> TrainingData:
    return prepare_data(digits(limit), batch_size=batch_size, validation_split=0.25, seed=seed)
