"""A user's own model and data factories, named by import path in a config."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def build_model(width: int = 8) -> keras.Model:
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(width)(inputs)))


def make_data(n: int = 96) -> dict[str, tf.data.Dataset]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")
    train = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(16)
    return {"train": train, "validation": (x[64:], y[64:])}
