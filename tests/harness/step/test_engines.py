"""One loop, two steps: what differs between the engines, and what the loop guarantees."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import train
from harness.callbacks.events import StepEnd
from harness.data import prepare_data
from harness.step.gradients import GradientPipeline
from tests.harness.problems import EventRecorder, digits, make_data, make_model

ENGINES = ["fit", "custom"]


def test_returns_a_keras_history_bound_to_the_model() -> None:
    model = make_model()
    history = train(model, make_data(), engine="custom", epochs=1)
    assert isinstance(history, keras.callbacks.History)
    assert model.history is history
    assert history.epoch == [0]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_data_of_unknown_length_takes_one_update_per_batch(
    engine: str, steps_per_execution: int
) -> None:
    # Keras's own fit() takes an 11th update per epoch here with steps_per_execution=1.
    x, y = digits(300)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b >= 0).batch(30)
    model = make_model(steps_per_execution=steps_per_execution)
    recorder = EventRecorder()
    data = prepare_data({"train": batches}, batch_size=30)
    train(model, data, engine=engine, epochs=2, callbacks=[recorder])
    assert int(model.optimizer.iterations) == 20
    ends = [e[1] for e in recorder.events if e[0] == "train_batch_end"]
    expected = list(range(0, 10)) if steps_per_execution == 1 else [2, 5, 8, 11]
    assert ends == expected * 2


def test_csv_logger_writes_what_it_writes_under_model_fit(tmp_path: Path) -> None:
    files = {}
    for engine in ("reference", *ENGINES):
        path = tmp_path / f"{engine}.csv"
        model, data = make_model(), make_data()
        logger = keras.callbacks.CSVLogger(str(path))
        if engine == "reference":
            model.fit(
                data.train.as_dataset(2),
                steps_per_epoch=data.train.num_batches,
                validation_data=data.validation.dataset(0),
                epochs=2,
                callbacks=[logger],
                verbose=0,
            )
        else:
            train(model, data, engine=engine, epochs=2, callbacks=[logger])
        files[engine] = path.read_text().splitlines()
    assert files["reference"][0] == "epoch,accuracy,loss,val_accuracy,val_loss"
    assert files["fit"] == files["reference"]  # the same numbers, to the last digit
    reference = np.loadtxt(files["reference"][1:], delimiter=",")
    custom = np.loadtxt(files["custom"][1:], delimiter=",")
    assert files["custom"][0] == files["reference"][0]
    np.testing.assert_allclose(custom, reference, rtol=1e-6)


def _poisoned_data() -> Any:
    """Batch 3 of every epoch holds a NaN sample weight, so the loss is NaN there.

    (An infinite input is not portable: oneDNN's ReLU on some CPUs maps NaN to 0.)
    """
    x, y = digits(300)
    weight = np.ones(len(x), dtype="float32")
    weight[100] = np.nan
    train = tf.data.Dataset.from_tensor_slices((x, y, weight)).batch(32)
    return prepare_data({"train": train}, batch_size=32), train


def test_terminate_on_nan_stops_both_engines_where_model_fit_stops() -> None:
    stopped = {}
    for engine in ("reference", *ENGINES):
        model = make_model()
        seen: list[int] = []
        callbacks = [
            keras.callbacks.TerminateOnNaN(),
            keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs, seen=seen: seen.append(batch)
            ),
        ]
        data, dataset = _poisoned_data()
        if engine == "reference":
            history = model.fit(dataset, epochs=3, callbacks=callbacks, verbose=0)
        else:
            # skip_step keeps the harness's own NaN guard from stopping first.
            gradients = GradientPipeline(model, on_nan="skip_step")
            history = train(
                model, data, engine=engine, epochs=3, callbacks=callbacks, gradients=gradients
            )
        stopped[engine] = (seen, len(history.epoch), model.stop_training)
    assert stopped["reference"] == ([0, 1, 2, 3], 1, True)
    assert stopped["fit"] == stopped["custom"] == stopped["reference"]


class WithOwnTrainStep(keras.Model):
    """The "custom train_step inside fit" pattern: an extra metric from the step."""

    def train_step(self, data: Any) -> dict[str, Any]:
        logs = super().train_step(data)
        return {**logs, "weight_norm": tf.linalg.global_norm(self.trainable_weights)}


def _own_step_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    inputs = keras.Input((64,))
    outputs = keras.layers.Dense(10)(keras.layers.Dense(16, activation="relu")(inputs))
    model = WithOwnTrainStep(inputs, outputs)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_engine_fit_runs_a_users_train_step_override() -> None:
    recorder = EventRecorder()
    train(_own_step_model(), make_data(), engine="fit", epochs=1, callbacks=[recorder])
    batch_ends = [e for e in recorder.events if e[0] == "train_batch_end"]
    assert batch_ends[0][2] == ("accuracy", "loss", "weight_norm")


def test_engine_custom_warns_that_it_does_not_run_the_override() -> None:
    recorder = EventRecorder()
    with pytest.warns(UserWarning, match="WithOwnTrainStep overrides train_step, which engine: "):
        train(_own_step_model(), make_data(), engine="custom", epochs=1, callbacks=[recorder])
    batch_ends = [e for e in recorder.events if e[0] == "train_batch_end"]
    assert batch_ends[0][2] == ("accuracy", "loss")


@pytest.mark.parametrize("engine", ENGINES)
def test_an_error_in_a_callback_propagates(engine: str) -> None:
    def boom(epoch: int, logs: dict[str, Any]) -> None:
        raise RuntimeError(f"boom in {engine}")

    with pytest.raises(RuntimeError, match=f"boom in {engine}"):
        train(
            make_model(),
            make_data(),
            engine=engine,
            epochs=2,
            callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=boom)],
        )


class SlowStepListener(keras.callbacks.Callback):
    """Takes its step events slowly, off the training thread (like a sink's network call)."""

    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def on_train_step_end(self, event: StepEnd) -> None:
        time.sleep(0.2)
        self.steps.append(event.step)


class BrokenAt(keras.utils.PyDataset):
    def __init__(self, broken: int) -> None:
        super().__init__()
        self.x, self.y = digits(300)
        self.broken = broken

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index == self.broken:
            raise OSError(f"cannot read batch {index}")
        return self.x[index * 30 : (index + 1) * 30], self.y[index * 30 : (index + 1) * 30]


@pytest.mark.parametrize("engine", ENGINES)
def test_pending_step_events_are_delivered_before_a_training_error_surfaces(
    engine: str,
) -> None:
    listener = SlowStepListener()
    data = prepare_data({"train": BrokenAt(6)}, batch_size=30, shuffle=False)
    with pytest.raises(Exception, match="cannot read batch 6"):
        train(make_model(), data, engine=engine, epochs=1, callbacks=[listener])
    # Whoever closes the sinks next finds every step before the error delivered.
    assert listener.steps == [1, 2, 3, 4, 5, 6]


class Closing(keras.callbacks.Callback):
    def __init__(self, log: list[str], name: str, *, fails: bool = False) -> None:
        super().__init__()
        self.log, self.name, self.fails = log, name, fails

    def close(self) -> None:
        self.log.append(self.name)
        if self.fails:
            raise OSError(f"{self.name} cannot close")


def test_a_failing_close_never_hides_the_training_error_nor_skips_others() -> None:
    closed: list[str] = []

    def boom(epoch: int, logs: dict[str, Any]) -> None:
        raise RuntimeError("training failed")

    callbacks = [
        Closing(closed, "first", fails=True),
        keras.callbacks.LambdaCallback(on_epoch_end=boom),
        Closing(closed, "second"),
    ]
    with (
        pytest.raises(RuntimeError, match="training failed"),
        pytest.warns(UserWarning, match="Closing.close\\(\\) failed after a training error"),
    ):
        train(make_model(), make_data(), engine="custom", epochs=1, callbacks=callbacks)
    assert closed == ["first", "second"]


def test_a_failing_close_after_successful_training_is_raised() -> None:
    closed: list[str] = []
    callbacks = [Closing(closed, "first", fails=True), Closing(closed, "second")]
    with pytest.raises(OSError, match="first cannot close"):
        train(make_model(), make_data(), engine="fit", epochs=1, callbacks=callbacks)
    assert closed == ["first", "second"]


@pytest.mark.parametrize("engine", ENGINES)
def test_batch_hooks_set_on_the_instance_are_called(engine: str) -> None:
    """The loop skips batch hooks nobody defines; LambdaCallback defines them per instance."""
    seen: list[tuple[str, int]] = []
    callback = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: seen.append(("begin", batch)),
        on_train_batch_end=lambda batch, logs: seen.append(("end", batch)),
    )
    train(make_model(), make_data(), engine=engine, epochs=1, callbacks=[callback])
    assert seen == [(kind, batch) for batch in range(10) for kind in ("begin", "end")]


class _CountingLoss(keras.losses.SparseCategoricalCrossentropy):
    """Counts its Python calls: one per trace of a step, none per executed step."""

    def __init__(self) -> None:
        super().__init__()
        self.traces = 0

    def call(self, y_true: Any, y_pred: Any) -> Any:
        self.traces += 1
        return super().call(y_true, y_pred)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_second_train_of_the_same_model_reuses_its_traced_step(engine: str) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, "softmax")])
    loss = _CountingLoss()
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    data = prepare_data(digits(64), batch_size=32, validation_split=0.25)
    train(model, data, engine=engine, epochs=1)
    traced = loss.traces
    assert traced >= 1
    train(model, data, engine=engine, epochs=2)  # the default pipeline: nothing retraced
    train(model, data, engine=engine, epochs=1, gradients=GradientPipeline(model))  # equal
    assert loss.traces == traced
    assert int(model.optimizer.iterations) == 4 * 2  # every call trained: 4 epochs of 2
    train(model, data, engine=engine, epochs=1, gradients=GradientPipeline(model, measure=False))
    assert loss.traces > traced  # other settings: another step
