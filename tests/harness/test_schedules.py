"""Schedules and the plateau multiplier: the rate each update applied, against numpy formulas,
in both engines; serialization; the plateau's state."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import keras_internals, train
from harness.callbacks import MetricsLogger
from harness.callbacks.plateau import PlateauReducer
from harness.schedules import PlateauSchedule, WarmupSchedule, build_schedule
from tests.harness.problems import make_data, make_model
from tracking import InMemorySink

ENGINES = ["fit", "custom"]
LR = 0.1


def _cosine(t: float, steps: int, alpha: float) -> float:
    return LR * (alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))


# (name, build_schedule settings, numpy rate at update index t = 0, 1, ... before warm-up)
CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("constant", {}, lambda t: LR),
    ("step", {"factor": 0.5, "every_steps": 4}, lambda t: LR * 0.5 ** (t // 4)),
    ("exponential", {"decay_rate": 0.5, "decay_steps": 8}, lambda t: LR * 0.5 ** (t / 8)),
    ("time_decay", {"decay": 0.25}, lambda t: LR / (1 + 0.25 * t)),
    ("cosine", {"decay_steps": 20, "alpha": 0.1}, lambda t: _cosine(t, 20, 0.1)),
    (
        "cosine",
        {"decay_steps": 6, "alpha": 0.0, "restarts": True},
        lambda t: _cosine(t % 6, 6, 0.0),
    ),
    (
        "polynomial",
        {"decay_steps": 16, "power": 2.0, "end_learning_rate": 0.01},
        lambda t: (LR - 0.01) * (1 - min(t, 16) / 16) ** 2 + 0.01,
    ),
    (
        "piecewise",
        {"boundaries": [5, 12], "values": [0.1, 0.05, 0.01]},
        lambda t: [0.1, 0.05, 0.01][int(np.searchsorted([5, 12], t, side="left"))],
    ),
]


def _warmed(reference: Any, warmup: int, start: float) -> Any:
    def rate(t: int) -> float:
        if t < warmup:
            return start + (reference(0) - start) * t / warmup
        return reference(t - warmup)

    return rate


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("name", "settings", "reference"), CASES, ids=lambda c: str(c)[:24])
def test_logged_rate_is_the_schedules_formula(engine, name, settings, reference) -> None:
    warmup, start = 5, 0.01
    schedule = build_schedule(name, LR, warmup_steps=warmup, warmup_start=start, **settings)
    sink = InMemorySink()
    model = make_model(optimizer=keras.optimizers.SGD(schedule))
    train(model, make_data(), engine=engine, epochs=3, callbacks=[MetricsLogger(sink)])
    logged = sink.history("step/learning_rate")
    assert [step for step, _ in logged] == list(range(1, 31))
    # Update t (1-based) applies the rate at iterations = t - 1.
    expected = [_warmed(reference, warmup, start)(t - 1) for t in range(1, 31)]
    np.testing.assert_allclose([v for _, v in logged], expected, rtol=1e-5, atol=1e-8)


class _CountingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self) -> None:
        self.inner = build_schedule("cosine", LR, decay_steps=20, warmup_steps=3)
        self.traced_calls = 0  # evaluations inside compiled calls (epoch rows read it eagerly)

    def __call__(self, step: Any) -> Any:
        self.traced_calls += not tf.executing_eagerly()
        return self.inner(step)


@pytest.mark.parametrize("engine", ENGINES)
def test_each_step_computes_its_rate_once_and_applies_that_value(engine: str) -> None:
    # Keras reads `optimizer.learning_rate` in `apply` and again per variable for weight
    # decay, each read evaluating the schedule: 6 evaluations per traced step here.
    schedule = _CountingSchedule()
    sink = InMemorySink()
    model = make_model(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01))
    train(model, make_data(), engine=engine, epochs=2, callbacks=[MetricsLogger(sink)])
    assert schedule.traced_calls == 1  # one trace of the train call, one evaluation in it
    assert float(model.optimizer.learning_rate) == pytest.approx(float(schedule.inner(20)))
    expected = [float(schedule.inner(t - 1)) for t in range(1, 21)]
    logged = [v for _, v in sink.history("step/learning_rate")]
    np.testing.assert_allclose(logged, expected, rtol=1e-6)


def test_schedules_reload_from_a_saved_model(tmp_path: Path) -> None:
    inner = build_schedule("cosine", LR, decay_steps=20, alpha=0.1, warmup_steps=5)
    schedule = PlateauSchedule(inner, multiplier=0.25, min_lr=0.001)
    model = make_model(optimizer=keras.optimizers.SGD(schedule))
    model.optimizer.build(model.trainable_variables)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    again = keras_internals.learning_rate_schedule(loaded.optimizer)  # what the optimizer steps
    assert isinstance(again, PlateauSchedule) and isinstance(again.schedule, WarmupSchedule)
    for step in (0, 3, 5, 12, 40):
        assert float(again(step)) == pytest.approx(float(schedule(step)))


@pytest.mark.parametrize("engine", ENGINES)
def test_plateau_multiplies_any_schedule(engine: str) -> None:
    inner = build_schedule("exponential", LR, decay_rate=0.5, decay_steps=10, warmup_steps=3)
    schedule = PlateauSchedule(inner, min_lr=0.0)
    # The training loss keeps falling, so in mode max it never improves: a cut every 2 epochs.
    plateau = PlateauReducer(schedule, monitor="loss", factor=0.5, patience=2, mode="max")
    sink = InMemorySink()
    model = make_model(optimizer=keras.optimizers.SGD(schedule))
    train(model, make_data(), engine=engine, epochs=5, callbacks=[plateau, MetricsLogger(sink)])
    multipliers = [v for _, v in sink.history("lr_multiplier")]
    assert multipliers == [1.0, 1.0, 0.5, 0.5, 0.25]  # after epochs 1..5
    # Each update applies the schedule's rate times the multiplier in force in its epoch.
    in_force = [1.0] * 10 + [1.0] * 10 + [1.0] * 10 + [0.5] * 10 + [0.5] * 10
    reference = _warmed(lambda t: LR * 0.5 ** (t / 10), 3, 0.0)
    expected = [reference(t - 1) * in_force[t - 1] for t in range(1, 51)]
    logged = [v for _, v in sink.history("step/learning_rate")]
    np.testing.assert_allclose(logged, expected, rtol=1e-5, atol=1e-8)
    state = plateau.state()
    assert (state["wait"], state["cooldown_counter"], state["multiplier"]) == (0, 0, 0.25)
    first_loss = sink.history("loss")[0][1]
    assert state["best"] == pytest.approx(-first_loss)  # mode max: never beaten since


def test_plateau_min_lr_floors_the_reduction_not_the_schedule() -> None:
    schedule = PlateauSchedule(build_schedule("constant", LR), multiplier=0.001, min_lr=0.01)
    assert float(schedule(0)) == pytest.approx(0.01)
    decayed = PlateauSchedule(build_schedule("time_decay", LR, decay=9.0), min_lr=0.05)
    assert float(decayed(1)) == pytest.approx(0.01)  # the schedule itself goes lower


def test_plateau_state_restores_counters_and_multiplier() -> None:
    schedule = PlateauSchedule(build_schedule("constant", LR))
    plateau = PlateauReducer(schedule, monitor="val_loss", patience=3)
    plateau.restore({"wait": 2, "cooldown_counter": 1, "best": 0.5, "multiplier": 0.1})
    assert plateau.state() == {
        "wait": 2,
        "cooldown_counter": 1,
        "best": 0.5,
        "multiplier": pytest.approx(0.1),
    }
    assert float(schedule(0)) == pytest.approx(LR * 0.1)


def test_plateau_on_a_key_the_run_never_logs_lists_the_keys() -> None:
    schedule = PlateauSchedule(build_schedule("constant", LR))
    plateau = PlateauReducer(schedule, monitor="val_acc")
    with pytest.raises(ValueError, match=r"no 'val_acc'. Available keys: \['accuracy', 'loss'"):
        train(
            make_model(optimizer=keras.optimizers.SGD(schedule)),
            make_data(),
            epochs=1,
            callbacks=[plateau],
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"factor": 1.5}, r"`factor` must be in \(0, 1\). Received: factor=1.5"),
        ({"patience": -1}, "`patience` and `cooldown` must be >= 0"),
        ({"mode": "up"}, "`mode` must be auto, min or max. Received: mode='up'"),
    ],
)
def test_plateau_rejects_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PlateauReducer(PlateauSchedule(build_schedule("constant", LR)), **kwargs)
