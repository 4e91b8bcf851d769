"""Fine-tuning and weight decay in both engines: frozen layers, one retrace when they are
unfrozen, layer-wise rate multipliers, and which weights decay (against a tape of our own)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import prepare_data, train
from harness.finetune import (
    Unfreezer,
    build_optimizer_for,
    freeze,
    layer_multipliers,
    parameter_counts,
)
from harness.step.gradients import GradientPipeline
from harness.weight_decay import exclude_from_weight_decay, undecayed_variables, weight_path
from tests.harness.problems import digits

ENGINES = ["fit", "custom"]


class CountingLoss(keras.losses.SparseCategoricalCrossentropy):
    """Counts its Python calls: one per trace of a step, none per executed step."""

    def __init__(self) -> None:
        super().__init__(from_logits=True)
        self.traces = 0

    def call(self, y_true: Any, y_pred: Any) -> Any:
        self.traces += 1
        return super().call(y_true, y_pred)


def _model(optimizer: Any = None, *, loss: Any = None, normalization: bool = False) -> Any:
    keras.utils.set_random_seed(2)
    layers: list[Any] = [keras.Input((64,)), keras.layers.Dense(16, name="body")]
    if normalization:
        layers.append(keras.layers.LayerNormalization(name="norm"))
    layers.append(keras.layers.Dense(10, name="head"))
    model = keras.Sequential(layers, name="net")
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1),
        loss=loss or keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _data(n: int = 64) -> Any:
    return prepare_data(digits(n), batch_size=32, shuffle=False)


def _values(layer: keras.layers.Layer) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in layer.weights]


@pytest.mark.parametrize("engine", ENGINES)
def test_frozen_layers_train_from_the_unfreeze_epoch_with_one_retrace(engine: str) -> None:
    traces = {}
    for unfreeze in (False, True):
        loss = CountingLoss()
        model = _model(keras.optimizers.Adam(0.01), loss=loss)
        frozen = freeze(model, ["bo*"])
        build_optimizer_for(model, frozen)
        assert parameter_counts(model) == {"trainable_params": 170, "frozen_params": 1040}
        start = _values(model.get_layer("body"))
        seen: list[list[np.ndarray]] = []
        body = model.get_layer("body")
        record = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda e, logs, seen=seen, body=body: seen.append(_values(body))
        )
        callbacks: list[Any] = [record]
        if unfreeze:
            callbacks.insert(0, Unfreezer(frozen, at_epoch=3))
        train(model, _data(), engine=engine, epochs=4, callbacks=callbacks)
        traces[unfreeze] = loss.traces
        for epoch_values in seen[:2]:  # epochs 1 and 2: frozen
            assert all(np.array_equal(a, b) for a, b in zip(epoch_values, start, strict=True))
        moved = not np.array_equal(seen[3][0], seen[2][0])
        assert moved == unfreeze  # epochs 3 and 4 train the layer only when unfrozen
    assert traces[True] == traces[False] + 1  # the step is retraced once, at the unfreeze


@pytest.mark.parametrize("engine", ENGINES)
def test_layer_rate_multipliers_scale_updates_and_zero_keeps_a_layer(engine: str) -> None:
    moved = {}
    for multiplier in (None, 0.5, 0.0):
        # Weight decay too: a multiplier scales a layer's decay along with its update.
        model = _model(keras.optimizers.SGD(0.1, weight_decay=0.01))
        pairs = [] if multiplier is None else layer_multipliers(model, {"bod*": multiplier})
        before = {n: _values(model.get_layer(n)) for n in ("body", "head")}
        gradients = GradientPipeline(model, lr_multipliers=pairs)
        train(model, _data(32), engine=engine, gradients=gradients)  # one update
        moved[multiplier] = {
            name: [a - b for a, b in zip(_values(model.get_layer(name)), start, strict=True)]
            for name, start in before.items()
        }
    for full, half, none in zip(
        moved[None]["body"], moved[0.5]["body"], moved[0.0]["body"], strict=True
    ):
        assert np.abs(full).max() > 0
        np.testing.assert_allclose(half, 0.5 * full, rtol=1e-5, atol=1e-7)  # float32 deltas
        assert not none.any()  # exactly unchanged
    for other in (moved[0.5]["head"], moved[0.0]["head"]):  # other layers: the full rate
        for got, want in zip(other, moved[None]["head"], strict=True):
            np.testing.assert_array_equal(got, want)


def test_unknown_layer_patterns_list_the_layers() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"finetune.freeze: the pattern 'conv\*' matches no "
                       r"layer. The model's layers: body, head"):  # fmt: skip
        freeze(model, ["conv*"])
    with pytest.raises(ValueError, match=r"finetune.layer_lr: the pattern 'x' matches no layer"):
        layer_multipliers(model, {"x": 0.1})
    with pytest.raises(ValueError, match=r"multipliers must be >= 0. Received: 'body': -1"):
        layer_multipliers(model, {"body": -1.0})


def test_default_exclusion_is_biases_and_normalization_weights() -> None:
    model = _model(normalization=True)
    paths = sorted(weight_path(model, v) for v in undecayed_variables(model))
    assert paths == ["body/bias", "head/bias", "norm/beta", "norm/gamma"]
    chosen = undecayed_variables(model, ["head/*"])
    assert [weight_path(model, v) for v in chosen] == ["head/kernel", "head/bias"]
    assert undecayed_variables(model, []) == []
    with pytest.raises(ValueError, match=r"pattern 'conv\*' matches no weight. The model's "
                       r"weights: body/kernel, body/bias"):  # fmt: skip
        undecayed_variables(model, ["conv*"])


@pytest.mark.parametrize("engine", ENGINES)
def test_decoupled_decay_spares_the_excluded_weights(engine: str) -> None:
    lr, decay = 0.1, 0.5
    model = _model(keras.optimizers.SGD(lr, weight_decay=decay), normalization=True)
    exclude_from_weight_decay(model)
    x, y = digits(32)
    start = [np.array(v.numpy()) for v in model.trainable_variables]
    with tf.GradientTape() as tape:  # the reference: our own gradients of the same batch
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    grads = [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]
    train(model, prepare_data((x, y), batch_size=32, shuffle=False), engine=engine)
    for variable, w, g in zip(model.trainable_variables, start, grads, strict=True):
        decayed = variable.path.endswith("kernel")  # not the biases, not the norm's weights
        expected = w - lr * decay * w - lr * g if decayed else w - lr * g
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-7)
