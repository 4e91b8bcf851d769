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


def swish2(x):  # noqa: ANN001, ANN201 - Keras's API
    """A user's activation function."""
    return x * keras.ops.sigmoid(2.0 * x)


class CentreLoss(keras.layers.Layer):
    """A user's layer: adds `weight` × the features' mean squared distance from their batch
    centre to the loss, and passes the features on."""

    def __init__(self, weight: float = 0.01, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, features):  # noqa: ANN001, ANN201 - Keras's API
        centre = keras.ops.mean(features, axis=0, keepdims=True)
        self.add_loss(self.weight * keras.ops.mean(keras.ops.square(features - centre)))
        return features

    def get_config(self) -> dict:
        return {**super().get_config(), "weight": self.weight}


def centre_model(hidden: int = 16) -> keras.Model:
    """Digits logits through a custom activation and the centre-loss layer."""
    inputs = keras.Input((64,))
    features = CentreLoss(0.01)(keras.layers.Dense(hidden, activation=swish2)(inputs))
    return keras.Model(inputs, keras.layers.Dense(10)(features))


class MeanConfidence(keras.metrics.Mean):
    """A user's metric class: the mean of the highest predicted probability."""

    def __init__(self, name: str = "mean_confidence", **kwargs: object) -> None:
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):  # noqa: ANN001 - Keras's API
        return super().update_state(keras.ops.max(keras.ops.softmax(y_pred), axis=-1))


class ScaledCrossentropy(keras.losses.Loss):
    """A user's loss class with an argument."""

    def __init__(self, scale: float = 1.0, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, y_true, y_pred):  # noqa: ANN001 - Keras's API
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return self.scale * loss

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}


def logits_crossentropy(y_true, y_pred):  # noqa: ANN001 - Keras's API
    """A user's loss function."""
    return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


def poisoned_digits(limit: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits with a NaN sample weight at example 100: batch 3 of 32 (update 4) is NaN."""
    from experiments.zoo.datasets import load_digits

    x, y = load_digits(limit)
    weight = np.ones(len(x), dtype="float32")
    weight[100] = np.nan
    return x, y, weight


def float16_crossentropy(y_true, y_pred):  # noqa: ANN001 - Keras's API
    """A user's loss that computes in float16 (what mixed_float16 warns about)."""
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return keras.ops.cast(loss, "float16")


class SlowBatches(keras.callbacks.Callback):
    """Sleeps after every batch, so a test can kill a run mid-training; changes nothing else.

    With `write_seconds`, writing each checkpoint takes that much longer (its state is slow to
    copy out, on the writer thread), so a test can kill a run during a checkpoint write.
    """

    def __init__(self, seconds: float = 0.01, write_seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds
        self.write_seconds = write_seconds

    def on_train_batch_end(self, batch, logs=None):  # noqa: ANN001 - Keras's API
        import time

        time.sleep(self.seconds)

    def state(self) -> SlowToWrite | None:  # nothing to resume: a resumed run starts afresh
        return SlowToWrite(self.write_seconds) if self.write_seconds else None

    def restore(self, state: object) -> None:
        pass


class SlowToWrite:
    """Array-like state that takes `seconds` to read out, as a large tensor would (time.sleep
    releases the GIL: training goes on meanwhile)."""

    dtype = np.dtype(np.uint8)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def numpy(self) -> np.ndarray:
        import time

        time.sleep(self.seconds)
        return np.zeros(4, np.uint8)


def broken_factory(**params: object) -> keras.Model:
    """A model or data factory whose own code fails."""
    raise RuntimeError("the factory broke")


class BrokenCallback(keras.callbacks.Callback):
    """A callback whose constructor fails."""

    def __init__(self) -> None:
        super().__init__()
        raise RuntimeError("the callback broke")


def digits_with_a_stray_label(limit: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Digits whose labels hold one class the 10-way model does not have."""
    from experiments.zoo.datasets import load_digits

    x, y = load_digits(limit=limit)
    y = y.copy()
    y[37] = 56
    return x, y
