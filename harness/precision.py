"""Mixed precision: Keras's dtype policies, set while a model is built, and their checks.

Keras fixes a layer's dtype policy when the layer is created, and `Model.compile` wraps the
optimizer in a `LossScaleOptimizer` (dynamic loss scaling) when the model's policy is
`mixed_float16`. Both engines then scale the loss the same way (`optimizer.scale_loss`), and
the gradient pipeline sits in front of the inner optimizer, so it sees unscaled gradients; an
overflowing step halves the loss scale and updates nothing (`optimizer.iterations` stays).

Example:
    >>> with dtype_policy("mixed_float16"):
    ...     model = build_model()
    >>> model.compile(optimizer="adam", loss="mse")  # now a LossScaleOptimizer
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, get_args

import keras

__all__ = [
    "PRECISIONS",
    "Precision",
    "dtype_policy",
    "float16_outputs",
    "loss_scale",
    "returns_float16",
    "scales_loss",
]

Precision = Literal["float32", "mixed_float16", "mixed_bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@contextmanager
def dtype_policy(precision: Precision) -> Iterator[None]:
    """Layers created inside the block compute in `precision`; the global policy is put back."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"`precision` must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}"
        )
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def float16_outputs(model: keras.Model) -> list[str]:
    """The names of the model's outputs that are not float32 (mixed precision wants float32)."""
    outputs = getattr(model, "outputs", None) or []
    return [
        getattr(output, "name", str(i))
        for i, output in enumerate(keras.tree.flatten(outputs))
        if keras.backend.standardize_dtype(output.dtype) != "float32"
    ]


def returns_float16(loss: Any, y_true: Any, y_pred: Any) -> bool:
    """Whether `loss` (a Keras `Loss` or a function) computes float16 values on this batch."""
    call = loss.call if isinstance(loss, keras.losses.Loss) else loss
    if not callable(call):
        return False  # a Keras name: its losses compute in float32
    values = call(y_true, y_pred)
    dtypes = {keras.backend.standardize_dtype(v.dtype) for v in keras.tree.flatten(values)}
    return "float16" in dtypes


def scales_loss(optimizer: Any) -> bool:
    """Whether the optimizer scales the loss (a `LossScaleOptimizer`, built or not)."""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def loss_scale(optimizer: Any) -> Any | None:
    """The dynamic loss scale of a built `LossScaleOptimizer`; None for any other optimizer."""
    return optimizer.dynamic_scale if scales_loss(optimizer) else None
