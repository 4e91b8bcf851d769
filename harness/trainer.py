"""One entry point for both engines: `fit()` and our GradientTape loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import keras

from harness.custom_engine import CustomEngine
from harness.data import TrainingData

Engine = Literal["fit", "custom"]
ENGINES: tuple[Engine, ...] = ("fit", "custom")


def train(
    model: keras.Model,
    data: TrainingData,
    *,
    engine: Engine = "fit",
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    shuffle: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> keras.callbacks.History:
    """Train a compiled model with the chosen engine; both take the same callbacks.

    Example:
        >>> history = train(model, prepare_data((x, y), batch_size=32), engine="custom")
    """
    import tensorflow as tf

    if isinstance(data.train, tf.data.Dataset):
        shuffle = False  # the pipeline shuffles; Keras warns that the flag is ignored
    kwargs: dict[str, Any] = dict(
        epochs=epochs,
        validation_data=data.validation,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        callbacks=list(callbacks),
        shuffle=shuffle,
        verbose=0,
    )
    try:
        if engine == "fit":
            return model.fit(data.train, **kwargs)
        if engine == "custom":
            return CustomEngine(model).fit(data.train, **kwargs)
        raise ValueError(f"`engine` must be one of {ENGINES}. Received: engine={engine!r}")
    finally:
        for callback in callbacks:
            close = getattr(callback, "close", None)
            if callable(close):
                close()
