"""`WeightAverage` against a numpy reference; `swapped()` on every exit path."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness.step.ema import WeightAverage
from tests.harness.problems import digits, make_model


def _reference(raw: list[list[np.ndarray]], *, decay, warmup, every, start) -> list[np.ndarray]:
    """The EMA in numpy from the raw weights recorded after each update t = 1, 2, ..."""
    shadow = [w.copy() for w in raw[0]]  # the weights before training
    n = 0
    for step, weights in enumerate(raw[1:], start=1):
        if step < start:
            shadow = [w.copy() for w in weights]
            continue
        if step % every:
            continue
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        shadow = [d * s + (1 - d) * w for s, w in zip(shadow, weights, strict=True)]
        n += 1
    return shadow


@pytest.mark.parametrize(
    ("warmup", "every", "start"), [(True, 1, 0), (False, 1, 0), (True, 3, 0), (False, 2, 4)]
)
def test_ema_matches_a_numpy_reference(warmup: bool, every: int, start: int) -> None:
    model = make_model()
    x, y = digits(320)
    ema = WeightAverage(model, decay=0.9, warmup=warmup, every_n_steps=every, start_step=start)
    update = tf.function(ema.update)  # as in the compiled train call: one graph
    raw = [[np.array(w.numpy()) for w in ema.weights]]
    for batch in range(10):
        model.train_on_batch(x[batch * 32 : (batch + 1) * 32], y[batch * 32 : (batch + 1) * 32])
        update(model.optimizer.iterations)
        raw.append([np.array(w.numpy()) for w in ema.weights])
    expected = _reference(raw, decay=0.9, warmup=warmup, every=every, start=start)
    for shadow, want in zip(ema.shadows, expected, strict=True):
        np.testing.assert_allclose(shadow.numpy(), want, rtol=1e-5, atol=1e-7)


def _trained() -> tuple[keras.Model, WeightAverage, np.ndarray]:
    model = make_model()
    x, y = digits(64)
    ema = WeightAverage(model, decay=0.5, warmup=False)
    for _ in range(3):
        model.train_on_batch(x, y)
        ema.update(model.optimizer.iterations)
    return model, ema, x


def test_swapped_predicts_saves_and_restores_the_raw_weights(tmp_path: Path) -> None:
    model, ema, x = _trained()
    raw = model.predict(x, verbose=0)
    with ema.swapped():
        averaged = model.predict(x, verbose=0)
        model.save(tmp_path / "ema.keras")
    assert not np.allclose(raw, averaged)
    np.testing.assert_array_equal(model.predict(x, verbose=0), raw)
    saved = keras.saving.load_model(tmp_path / "ema.keras")
    np.testing.assert_allclose(saved.predict(x, verbose=0), averaged, rtol=1e-6)


def test_swapped_restores_the_raw_weights_when_the_block_raises() -> None:
    model, ema, x = _trained()
    raw = [np.array(w.numpy()) for w in model.weights]
    with pytest.raises(RuntimeError, match="inside"), ema.swapped():
        model.evaluate(x, np.zeros(len(x)), verbose=0)
        raise RuntimeError("inside")
    for weight, value in zip(model.weights, raw, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_state_round_trip_and_bad_arguments() -> None:
    model, ema, _ = _trained()
    fresh = WeightAverage(make_model(), decay=0.5, warmup=False)
    fresh.restore(ema.state())
    for a, b in zip(fresh.shadows, ema.shadows, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(fresh.updates.numpy()) == 3
    with pytest.raises(ValueError, match=r"`decay` must be in \(0, 1\). Received: decay=1.5"):
        WeightAverage(model, decay=1.5)
    with pytest.raises(ValueError, match="`every_n_steps` must be >= 1"):
        WeightAverage(model, every_n_steps=0)


class RawWeights(keras.callbacks.Callback):
    """The raw weights after each update (one batch per compiled call)."""

    def __init__(self, ema: WeightAverage) -> None:
        super().__init__()
        self.ema = ema
        self.seen = [[np.array(w.numpy()) for w in ema.weights]]

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.seen.append([np.array(w.numpy()) for w in self.ema.weights])


def _loop_run(engine: str, *, with_ema: bool, decay: float = 0.9):
    from harness import train
    from tests.harness.problems import make_data

    model = make_model(dropout=0.2)
    ema = WeightAverage(model, decay=decay, every_n_steps=2) if with_ema else None
    recorder = RawWeights(ema) if ema is not None else None
    history = train(
        model,
        make_data(),
        engine=engine,
        epochs=2,
        callbacks=[recorder] if recorder else [],
        ema=ema,
    )
    return model, ema, recorder, history


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_the_loop_updates_the_ema_in_the_compiled_step_and_evaluates_it(engine: str) -> None:
    _, ema, recorder, history = _loop_run(engine, with_ema=True)
    assert ema is not None and recorder is not None
    expected = _reference(recorder.seen, decay=0.9, warmup=True, every=2, start=0)
    for shadow, want in zip(ema.shadows, expected, strict=True):
        np.testing.assert_allclose(shadow.numpy(), want, rtol=1e-5, atol=1e-7)
    assert int(ema.updates.numpy()) == 10  # 20 updates, every 2nd
    for key in ("val_ema_loss", "val_ema_accuracy", "val_loss"):
        assert len(history.history[key]) == 2
    assert history.history["val_ema_loss"] != history.history["val_loss"]
    # EMA never changes the optimization path: the same losses as without it.
    _, _, _, plain = _loop_run(engine, with_ema=False)
    assert plain.history["loss"] == history.history["loss"]
    assert plain.history["val_loss"] == history.history["val_loss"]


def test_both_engines_give_the_same_ema() -> None:
    (_, fit_ema, _, _), (_, custom_ema, _, _) = (
        _loop_run("fit", with_ema=True),
        _loop_run("custom", with_ema=True),
    )
    assert fit_ema is not None and custom_ema is not None
    for a, b in zip(fit_ema.shadows, custom_ema.shadows, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)
