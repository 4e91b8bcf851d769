"""`train()`: the Python API for people who keep their own scripts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras

from harness.checkpoints import Checkpointing
from harness.data import TrainingData
from harness.loop import TrainingLoop
from harness.step.ema import WeightAverage
from harness.step.engines import Engine, EngineName
from harness.step.gradients import GradientPipeline
from harness.stopping import StopSignal


def train(
    model: keras.Model,
    data: TrainingData,
    *,
    engine: EngineName | Engine = "fit",
    epochs: int = 1,
    steps_per_epoch: int | None = None,
    validation_steps: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    initial_epoch: int = 0,
    stop: StopSignal | None = None,
    ema: WeightAverage | None = None,
    gradients: GradientPipeline | None = None,
    checkpointing: Checkpointing | None = None,
    resume_from: dict[str, Any] | None = None,
) -> keras.callbacks.History:
    """Train a compiled model with the chosen engine; both run the same loop and callbacks.

    Callbacks with a `close()` method (our loggers) are closed afterwards, whatever happened;
    a failing `close()` never hides a training error, and never skips the other callbacks.

    With `checkpointing`, the loop saves its whole state (`harness.checkpoints`); with
    `resume_from` (a state such a checkpoint holds), training continues from it exactly.

    Example:
        >>> history = train(model, prepare_data((x, y), batch_size=32), engine="custom")
    """
    loop = TrainingLoop(
        model,
        data,
        engine=engine,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        callbacks=callbacks,
        initial_epoch=initial_epoch,
        stop=stop,
        ema=ema,
        gradients=gradients,
        checkpointing=checkpointing,
    )
    if resume_from is not None:
        loop.restore_state(resume_from)
    try:
        history = loop.run()
    except BaseException:
        close_callbacks(callbacks, training_failed=True)
        raise
    close_callbacks(callbacks, training_failed=False)
    return history


def close_callbacks(
    callbacks: Sequence[keras.callbacks.Callback], *, training_failed: bool
) -> None:
    """Call every callback's `close()`; after a training error, only warn about failures.

    Raises:
        Exception: the first `close()` failure, when training itself succeeded.
    """
    errors: list[Exception] = []
    for callback in callbacks:
        close = getattr(callback, "close", None)
        if not callable(close):
            continue
        try:
            close()
        except Exception as error:
            errors.append(error)
            if training_failed:
                warnings.warn(
                    f"{type(callback).__name__}.close() failed after a training error: {error!r}",
                    stacklevel=3,
                )
    if errors and not training_failed:
        raise errors[0]
