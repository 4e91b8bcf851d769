"""MetricsLogger sends the same metrics on the optimizer's global step in both engines."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness import train
from harness.callbacks import MetricsLogger
from tests.harness.problems import make_data, make_model
from tracking import InMemorySink

ENGINES = ["fit", "custom"]


def _logged(engine: str, model: keras.Model, *, epochs: int, every: int) -> InMemorySink:
    """Train `model` on the 10-batch problem with a MetricsLogger; return what it logged."""
    sink = InMemorySink()
    train(
        model,
        make_data(),
        engine=engine,
        epochs=epochs,
        callbacks=[MetricsLogger(sink, log_every_n_steps=every)],
    )
    return sink


@pytest.mark.parametrize("engine", ENGINES)
def test_step_and_epoch_metrics_land_on_the_global_step(engine: str) -> None:
    sink = InMemorySink()
    model = make_model()
    data = make_data(batch_size=32)  # 300 train examples -> 10 steps per epoch
    history = train(
        model,
        data,
        engine=engine,
        epochs=3,
        callbacks=[MetricsLogger(sink, log_every_n_steps=4)],
    )
    assert int(model.optimizer.iterations) == 30
    assert [s for s, _ in sink.history("step/loss")] == [4, 8, 12, 16, 20, 24, 28]
    assert [s for s, _ in sink.history("step/learning_rate")] == [4, 8, 12, 16, 20, 24, 28]
    assert [s for s, _ in sink.history("loss")] == [10, 20, 30]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([v for _, v in sink.history(key)], history.history[key])
    assert [v for _, v in sink.history("epoch")] == [0.0, 1.0, 2.0]
    assert all(v > 0 for _, v in sink.history("steps_per_sec"))
    assert all(v > 0 for _, v in sink.history("epoch_time_s"))
    assert sink.flush_waits == [False, False, False, True]


@pytest.mark.parametrize("engine", ENGINES)
def test_logs_the_learning_rate_actually_applied_at_each_step(engine: str) -> None:
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    sink = _logged(engine, make_model(learning_rate=schedule, optimizer="sgd"), epochs=1, every=1)
    # Step t (1-based) is taken with the schedule evaluated at iterations = t - 1.
    logged = sink.history("step/learning_rate")
    assert [s for s, _ in logged] == list(range(1, 11))
    np.testing.assert_allclose(
        [v for _, v in logged], [0.1 * 0.5 ** (t - 1) for t in range(1, 11)], rtol=1e-5
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_steps_per_execution_logs_each_time_a_multiple_is_crossed(engine: str) -> None:
    sink = _logged(engine, make_model(steps_per_execution=3), epochs=2, every=4)
    # Executions end at steps 3, 6, 9, 10 | 13, 16, 19, 20: log at the first end past 4, 8, ... 20
    assert [s for s, _ in sink.history("step/loss")] == [6, 9, 13, 16, 20]
    assert [s for s, _ in sink.history("loss")] == [10, 20]


def test_missing_selected_key_warns_with_available_keys() -> None:
    sink = InMemorySink()
    logger = MetricsLogger(sink, keys=["loss", "val_los"])
    with pytest.warns(UserWarning, match=r"\['val_los'\].*available keys: \['accuracy', 'loss'"):
        train(make_model(), make_data(), engine="custom", epochs=1, callbacks=[logger])
    assert sink.history("step/loss")


def test_rejects_a_non_positive_interval() -> None:
    with pytest.raises(
        ValueError, match="log_every_n_steps` must be >= 1. Received: log_every_n_steps=0"
    ):
        MetricsLogger(InMemorySink(), log_every_n_steps=0)
