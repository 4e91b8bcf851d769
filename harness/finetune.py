"""Fine-tuning: freeze layers by name, unfreeze them at an epoch, layer-wise rate multipliers.

Layers are picked by glob patterns on their names (`"conv*"`, `"block_3_*"`), nested layers
included; a pattern that matches no layer is an error that lists the layer names. Unfreezing
changes which variables train, so the loop retraces its compiled step once, at that epoch;
the optimizer is built on the frozen variables too, so they have their slots when they join.

Example:
    >>> frozen = freeze(model, ["conv*"])
    >>> build_optimizer_for(model, frozen)
    >>> train(model, data, callbacks=[Unfreezer(frozen, at_epoch=3)])
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import keras


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, nested models' layers included, outermost first."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def match_layers(
    model: keras.Model, patterns: Sequence[str], *, what: str
) -> list[keras.layers.Layer]:
    """The layers whose names match any of `patterns`, in model order.

    Raises:
        ValueError: a pattern matches no layer; the message lists the layer names.
    """
    layers = list(all_layers(model))
    names = [layer.name for layer in layers]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise ValueError(
                f"{what}: the pattern {pattern!r} matches no layer. The model's layers: "
                f"{', '.join(names)}"
            )
    return [layer for layer in layers if any(fnmatch.fnmatch(layer.name, p) for p in patterns)]


def freeze(model: keras.Model, patterns: Sequence[str]) -> list[keras.layers.Layer]:
    """Set `trainable = False` on the layers matching `patterns`; returns them."""
    layers = match_layers(model, patterns, what="finetune.freeze")
    for layer in layers:
        layer.trainable = False
    return layers


def build_optimizer_for(model: keras.Model, frozen: Iterable[keras.layers.Layer]) -> None:
    """Build the optimizer on the trainable variables and those of `frozen` layers."""
    frozen = list(frozen)
    for layer in frozen:
        layer.trainable = True
    try:
        model.optimizer.build(model.trainable_variables)
    finally:
        for layer in frozen:
            layer.trainable = False


class Unfreezer(keras.callbacks.Callback):
    """Make `layers` trainable again at the start of epoch `at_epoch` (counted from 1)."""

    stateless = True  # the epoch a resumed run starts at decides (`on_epoch_begin`)

    def __init__(self, layers: Sequence[keras.layers.Layer], *, at_epoch: int) -> None:
        super().__init__()
        if at_epoch < 1:
            raise ValueError(f"`at_epoch` must be >= 1. Received: at_epoch={at_epoch}")
        self.layers = list(layers)
        self.at_epoch = int(at_epoch)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch + 1 >= self.at_epoch:  # also when a resumed run starts after that epoch
            for layer in self.layers:
                layer.trainable = True


def layer_multipliers(
    model: keras.Model, multipliers: Mapping[str, float]
) -> list[tuple[keras.Variable, float]]:
    """Each weight of a layer matching a pattern, with its multiplier (the first match wins)."""
    for pattern, value in multipliers.items():
        if value < 0:
            raise ValueError(
                f"finetune.layer_lr: multipliers must be >= 0. Received: {pattern!r}: {value}"
            )
    chosen: dict[int, tuple[keras.Variable, float]] = {}
    for pattern, value in multipliers.items():
        for layer in match_layers(model, [pattern], what="finetune.layer_lr"):
            for variable in layer.weights:
                chosen.setdefault(id(variable), (variable, float(value)))
    return list(chosen.values())


def parameter_counts(model: keras.Model) -> dict[str, int]:
    """`trainable_params` and `frozen_params` (every other weight), as Keras's summary counts."""
    trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
    total = sum(int(v.numpy().size) for v in model.weights)
    return {"trainable_params": trainable, "frozen_params": total - trainable}
