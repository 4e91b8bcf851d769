"""MetricsLogger: the same metrics on the global step (optimizer updates) in both engines,
and tracking for a user's own `model.fit(...)`."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harness import train
from harness.callbacks import MetricsLogger
from harness.logs import scalar_logs
from tests.harness.problems import digits, make_data, make_model
from tracking import FanOutSink, InMemorySink, MlflowSink, TensorBoardSink

ENGINES = ["fit", "custom"]


def _logged(engine: str, model: keras.Model, *, epochs: int, every: int, **kw) -> InMemorySink:
    """Train `model` on the 10-batch problem with a MetricsLogger; return what it logged."""
    sink = InMemorySink()
    logger = MetricsLogger(sink, log_every_n_steps=every, **kw)
    train(model, make_data(), engine=engine, epochs=epochs, callbacks=[logger])
    return sink


def _steps(sink: InMemorySink, key: str) -> list[int]:
    return [step for step, _ in sink.history(key)]


@pytest.mark.parametrize("engine", ENGINES)
def test_step_and_epoch_metrics_land_on_the_global_step(engine: str) -> None:
    sink = InMemorySink()
    model = make_model()
    history = train(
        model,
        make_data(batch_size=32),  # 300 train examples -> 10 steps per epoch
        engine=engine,
        epochs=3,
        callbacks=[MetricsLogger(sink, log_every_n_steps=4)],
    )
    assert int(model.optimizer.iterations) == 30
    assert _steps(sink, "step/batch_loss") == [4, 8, 12, 16, 20, 24, 28]
    assert _steps(sink, "step/learning_rate") == [4, 8, 12, 16, 20, 24, 28]
    assert _steps(sink, "loss") == [10, 20, 30]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([v for _, v in sink.history(key)], history.history[key])
    assert [v for _, v in sink.history("epoch")] == [1.0, 2.0, 3.0]  # counted from 1
    assert all(v > 0 for _, v in sink.history("steps_per_sec"))
    assert all(v > 0 for _, v in sink.history("epoch_time_s"))
    assert sink.flush_waits == [False, False, False, True]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("loss_scaled", [False, True])
def test_logs_the_learning_rate_each_update_applied(engine: str, loss_scaled: bool) -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    optimizer = keras.optimizers.SGD(schedule)
    if loss_scaled:  # the wrapper hides the schedule behind `inner_optimizer`
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    sink = _logged(engine, make_model(optimizer=optimizer), epochs=1, every=1)
    # Update t (1-based) is applied with the schedule at iterations = t - 1.
    logged = sink.history("step/learning_rate")
    assert [s for s, _ in logged] == list(range(1, 11))
    np.testing.assert_allclose(
        [v for _, v in logged], [0.1 * 0.5 ** (t - 1) for t in range(1, 11)], rtol=1e-5
    )
    # The epoch row holds the rate of the next update.
    np.testing.assert_allclose([v for _, v in sink.history("learning_rate")], [0.1 * 0.5**10])


@pytest.mark.parametrize("engine", ENGINES)
def test_steps_count_optimizer_updates_not_batches(engine: str) -> None:
    # Keras's own accumulation: 10 batches per epoch, an update every 2nd.
    optimizer = keras.optimizers.Adam(0.01, gradient_accumulation_steps=2)
    sink = _logged(engine, make_model(optimizer=optimizer), epochs=2, every=1)
    assert _steps(sink, "step/batch_loss") == list(range(1, 11))
    assert _steps(sink, "loss") == [5, 10]


@pytest.mark.parametrize("engine", ENGINES)
def test_steps_per_execution_logs_each_time_a_multiple_is_crossed(engine: str) -> None:
    sink = _logged(engine, make_model(steps_per_execution=3), epochs=2, every=4)
    # Executions end at steps 3, 6, 9, 10 | 13, 16, 19, 20: log at the first end past 4, 8, ... 20
    assert _steps(sink, "step/batch_loss") == [6, 9, 13, 16, 20]
    assert _steps(sink, "loss") == [10, 20]


@pytest.mark.parametrize("engine", ENGINES)
def test_vector_metrics_are_logged_per_component(engine: str) -> None:
    f1 = keras.metrics.F1Score(average=None, name="f1")
    model = make_model(metrics=["accuracy", f1])
    one_hot = keras.losses.CategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=one_hot, metrics=["accuracy", f1])
    x, y = digits(400)
    from harness.data import prepare_data

    data = prepare_data((x, np.eye(10, dtype="float32")[y]), batch_size=32, validation_split=0.25)
    sink = InMemorySink()
    history = train(
        model, data, engine=engine, epochs=1, callbacks=[MetricsLogger(sink, log_every_n_steps=5)]
    )
    assert _steps(sink, "step/batch_f1/9") == [5, 10]
    assert _steps(sink, "val_f1/0") == [10]
    np.testing.assert_allclose(
        [sink.history(f"f1/{i}")[0][1] for i in range(10)], np.asarray(history.history["f1"][0])
    )


def test_selected_keys_only_and_a_missing_one_warns_with_the_available_keys() -> None:
    sink = InMemorySink()
    logger = MetricsLogger(sink, log_every_n_steps=5, keys=["loss", "val_los"])
    with pytest.warns(UserWarning, match=r"\['val_los'\].*available keys: \['accuracy', 'loss'"):
        train(make_model(), make_data(), engine="custom", epochs=1, callbacks=[logger])
    keys = {key for key, _, _ in sink.metrics}
    assert {key for key in keys if key.startswith("step/")} == {
        "step/batch_loss",
        "step/learning_rate",  # the step's own values are not log keys: always there
        "step/grad_norm",
    }
    assert _steps(sink, "step/batch_loss") == [5, 10]
    assert "accuracy" not in keys and _steps(sink, "loss") == [10]


class RunningMeans(keras.callbacks.Callback):
    """Keras's own per-batch logs: the running means of the epoch so far."""

    def __init__(self) -> None:
        super().__init__()
        self.means: list[dict[str, float]] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.means.append({k: float(v) for k, v in (logs or {}).items()})


@pytest.mark.parametrize("engine", ENGINES)
def test_step_values_are_those_of_the_batch_not_the_running_mean(engine: str) -> None:
    sink, means = InMemorySink(), RunningMeans()
    logger = MetricsLogger(sink, log_every_n_steps=1)
    train(make_model(), make_data(), engine=engine, epochs=2, callbacks=[means, logger])
    # Reference from Keras's running means: batch k's value is the change of the weighted sum
    # (300 examples per epoch: nine batches of 32, then 12).
    sizes = np.array([32] * 9 + [12])
    for key in ("loss", "accuracy"):
        running = np.array([m[key] for m in means.means]).reshape(2, 10)
        sums = running * np.cumsum(sizes)
        expected = np.diff(sums, axis=1, prepend=0) / sizes
        logged = [v for _, v in sink.history(f"step/batch_{key}")]
        np.testing.assert_allclose(logged, expected.reshape(-1), rtol=2e-4, atol=1e-6)
        # Not the running mean: the logged values jump around it.
        assert not np.allclose(logged, running.reshape(-1))
    assert not any(key.startswith("step/running_") for key, _, _ in sink.metrics)


def test_rejects_a_non_positive_interval() -> None:
    with pytest.raises(
        ValueError, match="log_every_n_steps` must be >= 1. Received: log_every_n_steps=0"
    ):
        MetricsLogger(InMemorySink(), log_every_n_steps=0)


def test_tracks_a_users_own_model_fit_in_mlflow_and_tensorboard(tmp_path: Path) -> None:
    """'Tracking for your existing fit script': no harness loop, plain Keras fit()."""
    x, y = digits(400)
    mlflow = MlflowSink.start(f"sqlite:///{tmp_path}/mlflow.db", experiment="own-fit")
    sink = FanOutSink([mlflow, TensorBoardSink(tmp_path / "tb")])
    model = make_model()
    history = model.fit(
        x,
        y,
        batch_size=40,
        epochs=2,
        validation_split=0.25,
        verbose=0,
        callbacks=[MetricsLogger(sink, log_every_n_steps=3)],
    )
    sink.close()
    client = MlflowClient(mlflow.tracking_uri)
    # 300 training examples / 40 -> 8 steps per epoch; step metrics every 3 updates.
    assert [m.step for m in client.get_metric_history(mlflow.run_id, "step/running_loss")] == [
        3,
        6,
        9,
        12,
        15,
    ]
    val_loss = client.get_metric_history(mlflow.run_id, "val_loss")
    assert [m.step for m in val_loss] == [8, 16]
    np.testing.assert_allclose([m.value for m in val_loss], history.history["val_loss"], rtol=1e-6)
    lr = client.get_metric_history(mlflow.run_id, "step/learning_rate")
    np.testing.assert_allclose([m.value for m in lr], [0.01] * 5, rtol=1e-6)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("step/running_loss")] == [3, 6, 9, 12, 15]


def test_scalar_logs_flattens_vectors_and_converts_scalars() -> None:
    values = scalar_logs({"loss": np.float32(0.5), "f1": np.array([[0.25, 0.5]])})
    assert values == {"loss": 0.5, "f1/0": 0.25, "f1/1": 0.5}
