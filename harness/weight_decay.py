"""Which weights decoupled weight decay leaves alone: biases and normalization weights.

Keras's optimizers decay every weight unless told otherwise; decaying biases and the scales
and offsets of normalization layers is a known harm (they are not what over-fits), so the
default excludes them. Patterns are globs on a weight's path inside the model
(`dense/bias`, `conv*/kernel`, `*/bias`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import keras

from harness import keras_internals
from harness.finetune import all_layers

NORMALIZATION_LAYERS: tuple[type[keras.layers.Layer], ...] = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.UnitNormalization,
    keras.layers.RMSNormalization,
)


def undecayed_variables(
    model: keras.Model, exclude: Sequence[str] | None = None
) -> list[keras.Variable]:
    """The weights decay skips: those whose path matches `exclude`, or by default biases and
    every weight of a normalization layer.

    Raises:
        ValueError: a pattern matches no weight; the message lists the weights' paths.
    """
    weights = list(model.weights)
    if exclude is None:
        norms = [layer for layer in all_layers(model) if isinstance(layer, NORMALIZATION_LAYERS)]
        normalization = {id(v) for layer in norms for v in layer.weights}
        return [v for v in weights if v.name == "bias" or id(v) in normalization]
    paths = [weight_path(model, v) for v in weights]
    for pattern in exclude:
        if not fnmatch.filter(paths, pattern):
            raise ValueError(
                f"optimizer.weight_decay_exclude: the pattern {pattern!r} matches no weight. "
                f"The model's weights: {', '.join(paths)}"
            )
    return [v for v, path in zip(weights, paths, strict=True) if _matches(path, exclude)]


def weight_path(model: keras.Model, variable: keras.Variable) -> str:
    """`dense/kernel`: the variable's path inside the model (without the model's name)."""
    prefix = f"{model.name}/"
    path = str(variable.path)
    return path[len(prefix) :] if path.startswith(prefix) else path


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def exclude_from_weight_decay(
    model: keras.Model, exclude: Sequence[str] | None = None
) -> list[keras.Variable]:
    """Tell the model's optimizer (if it decays) to leave `undecayed_variables` alone."""
    optimizer = keras_internals.inner_optimizer(model.optimizer)
    if getattr(optimizer, "weight_decay", None) is None:
        return []
    variables = undecayed_variables(model, exclude)
    keras_internals.exclude_from_weight_decay(optimizer, variables)
    return variables
