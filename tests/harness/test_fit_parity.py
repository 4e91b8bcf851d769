"""Both engines against the real `keras.Model.fit`: same history, same events, same weights.

One table of inputs and options; every row trains three times — `Model.fit` (the reference),
`engine: fit` and `engine: custom` through the harness's loop — in deterministic mode.
`engine: fit` runs the model's own train step, so its final weights equal `Model.fit`'s bit for
bit; `engine: custom` runs our GradientTape step and must match to float tolerance.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import train
from harness.data import TrainingData, prepare_data
from tests.harness.problems import EventRecorder, assert_same_weights, digits, make_model

# (our data, the reference's fit() arguments)
Inputs = tuple[TrainingData, dict[str, Any]]


@pytest.fixture(scope="module", autouse=True)
def deterministic_ops() -> None:
    # Process-wide and irreversible; harmless for the other tests, which run on the CPU.
    tf.config.experimental.enable_op_determinism()


def shuffled_arrays(epochs: int, batch_size: int = 32) -> Callable[[], Inputs]:
    def make() -> Inputs:
        data = prepare_data(digits(400), batch_size=batch_size, validation_split=0.25, seed=3)
        return data, {
            # Our permutation per pass, back to back: fit() sees the batches we train on.
            "x": data.train.as_dataset(epochs),
            "shuffle": False,  # the dataset is shuffled; this only silences fit()'s warning
            "steps_per_epoch": data.train.num_batches,
            "validation_data": data.validation.dataset(0),
        }

    return make


def plain_arrays() -> Inputs:
    # 401 examples at 0.2 leave floor(320.8) = 320 for training, as in Keras.
    x, y = digits(401)
    data = prepare_data((x, y), batch_size=32, validation_split=0.2, shuffle=False)
    assert data.num_train_examples == 320
    return data, {"x": x, "y": y, "batch_size": 32, "validation_split": 0.2, "shuffle": False}


def _tf_datasets(filtered: bool = False) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    x, y = digits(400)
    train = tf.data.Dataset.from_tensor_slices((x[:300], y[:300])).shuffle(300, seed=5)
    if filtered:
        train = train.filter(lambda features, label: label >= 0)  # length unknown
    validation = tf.data.Dataset.from_tensor_slices((x[300:], y[300:])).batch(32)
    return train.batch(32), validation


def tf_data() -> Inputs:
    train_ds, validation = _tf_datasets()
    return prepare_data({"train": train_ds, "validation": validation}, batch_size=32), {
        "x": train_ds,
        "shuffle": False,  # the pipeline shuffles; this only silences fit()'s warning
        "validation_data": validation,
    }


def unknown_length_tf_data() -> Inputs:
    train_ds, validation = _tf_datasets(filtered=True)
    assert int(train_ds.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    return prepare_data({"train": train_ds, "validation": validation}, batch_size=32), {
        "x": train_ds,
        "shuffle": False,  # the pipeline shuffles; this only silences fit()'s warning
        "validation_data": validation,
    }


class Batches(keras.utils.PyDataset):
    def __init__(self, x: np.ndarray, y: np.ndarray, size: int = 50, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.x, self.y, self.size = x, y, size

    def __len__(self) -> int:
        return len(self.x) // self.size

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        part = slice(index * self.size, (index + 1) * self.size)
        return self.x[part], self.y[part]


def py_dataset_with_workers() -> Inputs:
    x, y = digits(400)
    batches = Batches(x[:300], y[:300], workers=2)
    data = prepare_data(
        {"train": batches, "validation": (x[300:], y[300:])}, batch_size=50, shuffle=False
    )
    return data, {"x": batches, "shuffle": False, "validation_data": data.validation.dataset(0)}


def endless_batches(x: np.ndarray, y: np.ndarray, size: int = 30) -> Any:
    while True:
        for start in range(0, len(x), size):
            yield x[start : start + size], y[start : start + size]


def generator() -> Inputs:
    x, y = digits(300)
    data = prepare_data({"train": endless_batches(x, y)}, batch_size=30)
    return data, {"x": endless_batches(x, y), "steps_per_epoch": 4}


@dataclass
class Case:
    inputs: Callable[[], Inputs]
    epochs: int = 2
    steps_per_execution: int = 1
    learning_rate: float = 0.01
    options: dict[str, Any] = field(default_factory=dict)  # for fit() and train() alike
    callbacks: Callable[[Path], list[keras.callbacks.Callback]] = lambda tmp: []


CASES = {
    "arrays shuffled, validation split": Case(shuffled_arrays(2)),
    "arrays shuffled, steps_per_execution 3": Case(
        shuffled_arrays(2, batch_size=25), steps_per_execution=3
    ),
    "arrays in order, Keras's validation_split": Case(plain_arrays),
    "arrays in order, steps_per_execution 3": Case(plain_arrays, steps_per_execution=3),
    "tf.data reshuffled each epoch": Case(tf_data, epochs=3),
    "tf.data of unknown length, steps_per_execution 3": Case(
        unknown_length_tf_data, steps_per_execution=3
    ),
    "PyDataset with workers": Case(py_dataset_with_workers),
    "generator with steps_per_epoch": Case(generator, options={"steps_per_epoch": 4}),
    "initial_epoch": Case(shuffled_arrays(3), epochs=3, options={"initial_epoch": 1}),
    "EarlyStopping": Case(
        shuffled_arrays(12),
        epochs=12,
        learning_rate=0.5,
        callbacks=lambda tmp: [keras.callbacks.EarlyStopping(monitor="val_loss", patience=1)],
    ),
    "BackupAndRestore": Case(
        shuffled_arrays(4),
        epochs=4,
        callbacks=lambda tmp: [keras.callbacks.BackupAndRestore(str(tmp / "backup"))],
    ),
}


def _reference(case: Case, tmp: Path) -> tuple[keras.Model, Any, EventRecorder]:
    model = make_model(
        steps_per_execution=case.steps_per_execution, learning_rate=case.learning_rate
    )
    _, fit_args = case.inputs()
    recorder = EventRecorder()
    fit_args = {**fit_args, **{k: v for k, v in case.options.items() if k not in fit_args}}
    history = model.fit(
        **fit_args, epochs=case.epochs, callbacks=[recorder, *case.callbacks(tmp)], verbose=0
    )
    return model, history, recorder


def _harness(case: Case, engine: str, tmp: Path) -> tuple[keras.Model, Any, EventRecorder]:
    model = make_model(
        steps_per_execution=case.steps_per_execution, learning_rate=case.learning_rate
    )
    data, _ = case.inputs()
    recorder = EventRecorder()
    history = train(
        model,
        data,
        engine=engine,
        epochs=case.epochs,
        callbacks=[recorder, *case.callbacks(tmp)],
        **case.options,
    )
    return model, history, recorder


def _backup_of_two_epochs(case: Case, tmp: Path) -> Path:
    """A BackupAndRestore directory holding a run stopped after two of its four epochs."""
    source = tmp / "two-epochs"
    model = make_model()
    _, fit_args = case.inputs()
    backup = keras.callbacks.BackupAndRestore(str(source / "backup"), delete_checkpoint=False)
    model.fit(**fit_args, epochs=2, callbacks=[backup], verbose=0)
    return source


@pytest.mark.parametrize("name", list(CASES))
def test_both_engines_give_model_fit_history_events_and_weights(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    backup = _backup_of_two_epochs(case, tmp_path) if name == "BackupAndRestore" else None
    runs = {}
    for engine in ("reference", "fit", "custom"):
        work = tmp_path / engine
        if backup is not None:
            shutil.copytree(backup, work)
        if engine == "reference":
            runs[engine] = _reference(case, work)
        else:
            runs[engine] = _harness(case, engine, work)

    reference, ref_history, ref_events = runs["reference"]
    assert ref_events.count("train_batch_end") > 0
    if name == "EarlyStopping":
        assert len(ref_history.epoch) < case.epochs, "the problem must make EarlyStopping fire"
    if name == "BackupAndRestore":
        assert ref_history.epoch == [2, 3], "fit() must resume from the backup"
    for engine in ("fit", "custom"):
        model, history, recorder = runs[engine]
        assert recorder.events == ref_events.events, engine
        assert history.epoch == ref_history.epoch, engine
        assert list(history.history) == list(ref_history.history), engine
        assert int(model.optimizer.iterations) == int(reference.optimizer.iterations), engine
        for key, values in ref_history.history.items():
            np.testing.assert_allclose(history.history[key], values, rtol=1e-6, err_msg=key)
    fit_model, fit_history, _ = runs["fit"]
    assert fit_history.history == ref_history.history
    assert_same_weights(fit_model, reference)
