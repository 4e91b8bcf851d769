"""Both engines emit the same events and logs, so any Keras callback behaves the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from harness import train
from harness.data import prepare_data
from tests.harness.problems import digits, make_data, make_model

ENGINES = ["fit", "custom"]


class EventRecorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[Any, ...]] = []

    def _record(self, name: str, index: Any, logs: dict[str, Any] | None) -> None:
        self.events.append((name, index, tuple(sorted(logs or {}))))

    def on_train_begin(self, logs=None):
        self._record("train_begin", None, logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._record("epoch_begin", epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._record("train_batch_begin", batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._record("train_batch_end", batch, logs)

    def on_test_begin(self, logs=None):
        self._record("test_begin", None, logs)

    def on_test_batch_end(self, batch, logs=None):
        self._record("test_batch_end", batch, logs)

    def on_test_end(self, logs=None):
        self._record("test_end", None, logs)

    def on_epoch_end(self, epoch, logs=None):
        self._record("epoch_end", epoch, logs)

    def on_train_end(self, logs=None):
        self._record("train_end", None, logs)


def _run(engine: str, *, steps_per_execution: int = 1, callbacks=(), epochs: int = 2, **kw):
    model = make_model(steps_per_execution=steps_per_execution)
    history = train(model, make_data(), engine=engine, epochs=epochs, callbacks=callbacks, **kw)
    return model, history


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_custom_engine_matches_fit_history_and_events(steps_per_execution: int) -> None:
    results = {}
    for engine in ENGINES:
        recorder = EventRecorder()
        _, history = _run(engine, steps_per_execution=steps_per_execution, callbacks=[recorder])
        results[engine] = (history.history, recorder.events)
    fit_history, fit_events = results["fit"]
    custom_history, custom_events = results["custom"]
    assert set(fit_history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert custom_events == fit_events
    for key, values in fit_history.items():
        np.testing.assert_allclose(custom_history[key], values, rtol=1e-6)


def test_returns_a_keras_history_bound_to_the_model() -> None:
    model, history = _run("custom", epochs=1)
    assert isinstance(history, keras.callbacks.History)
    assert model.history is history
    assert history.epoch == [0]


def test_early_stopping_stops_at_the_same_epoch_in_both_engines() -> None:
    stopped = {}
    for engine in ENGINES:
        # A learning rate this high makes validation loss rise early on this problem.
        model = make_model(learning_rate=0.5)
        stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)
        history = train(model, make_data(), engine=engine, epochs=12, callbacks=[stopper])
        stopped[engine] = (stopper.stopped_epoch, len(history.epoch))
    assert stopped["fit"][0] > 0, "the problem must make EarlyStopping fire"
    assert stopped["fit"][1] < 12
    assert stopped["custom"] == stopped["fit"]


def test_csv_logger_writes_the_same_columns_and_rows(tmp_path: Path) -> None:
    rows = {}
    for engine in ENGINES:
        path = tmp_path / f"{engine}.csv"
        _run(engine, callbacks=[keras.callbacks.CSVLogger(str(path))])
        rows[engine] = path.read_text().splitlines()
    assert rows["fit"][0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    assert rows["custom"][0] == rows["fit"][0]
    assert len(rows["custom"]) == len(rows["fit"]) == 3


def _appender(seen: list[int]) -> Any:
    return lambda batch, logs: seen.append(batch)


def test_terminate_on_nan_stops_both_engines_at_the_same_batch() -> None:
    batches = {}
    for engine in ENGINES:
        model = make_model(learning_rate=1e9, optimizer="sgd")
        seen: list[int] = []
        history = train(
            model,
            make_data(),
            engine=engine,
            epochs=3,
            callbacks=[
                keras.callbacks.TerminateOnNaN(),
                keras.callbacks.LambdaCallback(on_train_batch_end=_appender(seen)),
            ],
        )
        batches[engine] = (seen[-1], len(history.epoch), model.stop_training)
    assert batches["fit"][2] is True
    assert batches["custom"] == batches["fit"]


class _Batches(keras.utils.PyDataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x) // 50

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        part = slice(index * 50, (index + 1) * 50)
        return self.x[part], self.y[part]


def test_pydataset_with_workers_gives_the_same_history_in_both_engines() -> None:
    x, y = digits(300)
    results = {}
    for engine in ENGINES:
        data = prepare_data(
            {"train": _Batches(x, y, workers=2), "validation": (x, y)}, batch_size=50
        )
        model = make_model()
        results[engine] = train(model, data, engine=engine, epochs=2, shuffle=False).history
    for key in results["fit"]:
        np.testing.assert_allclose(results["custom"][key], results["fit"][key], rtol=1e-6)


def test_generator_with_steps_per_epoch_runs_in_the_custom_engine() -> None:
    x, y = digits(300)

    def batches():
        while True:
            for start in range(0, 300, 30):
                yield x[start : start + 30], y[start : start + 30]

    data = prepare_data({"train": batches()}, batch_size=30)
    recorder = EventRecorder()
    model = make_model()
    history = train(model, data, engine="custom", epochs=2, steps_per_epoch=4, callbacks=[recorder])
    ends = [e for e in recorder.events if e[0] == "train_batch_end"]
    assert len(ends) == 8
    assert int(model.optimizer.iterations) == 8
    assert len(history.history["loss"]) == 2


def test_an_error_in_a_callback_propagates_from_both_engines() -> None:
    for engine in ENGINES:

        def boom(epoch: int, logs: dict[str, Any], engine: str = engine) -> None:
            raise RuntimeError(f"boom in {engine}")

        with pytest.raises(RuntimeError, match=f"boom in {engine}"):
            _run(engine, callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=boom)])
