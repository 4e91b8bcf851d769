"""Stopping is a flag checked between compiled calls, so shutdown sees one consistent step."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import keras
import pytest

from harness import StopSignal, TrainingInterrupted, TrainingLoop, stop_on_signals, train
from harness.callbacks.events import StepEnd
from tests.harness.problems import EventRecorder, make_data, make_model

ENGINES = ["fit", "custom"]


class StepSteps(keras.callbacks.Callback):
    """Records the global step of every step event."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def on_train_step_end(self, event: StepEnd) -> None:
        self.steps.append(event.step)


def _at_batch(batch: int, action: Any) -> keras.callbacks.Callback:
    def maybe(index: int, logs: dict[str, Any]) -> None:
        if index == batch:
            action()

    return keras.callbacks.LambdaCallback(on_train_batch_end=maybe)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_requested_stop_ends_training_at_the_next_step_boundary(engine: str) -> None:
    stop = StopSignal()
    recorder, steps = EventRecorder(), StepSteps()
    model = make_model()
    loop = TrainingLoop(
        model,
        make_data(),
        engine=engine,
        epochs=3,
        stop=stop,
        callbacks=[recorder, steps, _at_batch(3, lambda: stop.request("enough"))],
    )
    with pytest.raises(TrainingInterrupted, match="enough"):
        loop.run()
    # Weights, data position and callbacks all stopped after batch 3 of epoch 0.
    assert int(model.optimizer.iterations) == 4
    assert loop.capture_state()["data"]["epoch_step"] == 4
    assert steps.steps == [1, 2, 3, 4]
    assert recorder.events[-1][:2] == ("train_batch_end", 3)
    assert recorder.count("epoch_end") == 0 and recorder.count("train_end") == 0


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")]
)
def test_a_signal_stops_training_at_a_step_boundary(signum: int, name: str) -> None:
    model = make_model()
    recorder = EventRecorder()
    stop = StopSignal()

    def send() -> None:
        os.kill(os.getpid(), signum)
        while not stop.requested:  # Python runs the handler at its next check
            time.sleep(0.001)

    with pytest.raises(TrainingInterrupted, match=f"{name}.* received"), stop_on_signals(stop):
        train(
            model,
            make_data(),
            engine="custom",
            epochs=3,
            stop=stop,
            callbacks=[recorder, _at_batch(5, send)],
        )
    assert int(model.optimizer.iterations) == 6
    assert recorder.events[-1][:2] == ("train_batch_end", 5)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


def test_a_second_signal_interrupts_at_once() -> None:
    stop = StopSignal()

    def twice() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        while not stop.requested:  # let the first handler run: signals are not queued
            time.sleep(0.001)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler raises here

    with pytest.raises(KeyboardInterrupt, match="second Ctrl-C") as raised:
        with stop_on_signals(stop):
            train(make_model(), make_data(), epochs=1, stop=stop, callbacks=[_at_batch(2, twice)])
    assert not isinstance(raised.value, TrainingInterrupted)


def test_a_signal_after_training_still_ends_the_block_interrupted() -> None:
    with pytest.raises(TrainingInterrupted, match="SIGTERM received"):
        with stop_on_signals(StopSignal()) as stop:
            train(make_model(), make_data(), epochs=1, stop=stop)
            os.kill(os.getpid(), signal.SIGTERM)  # e.g. while the model is being saved


def test_a_stop_at_an_epoch_end_leaves_the_next_epoch_to_run() -> None:
    stop = StopSignal()
    request = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: stop.request())
    loop = TrainingLoop(make_model(), make_data(), epochs=3, stop=stop, callbacks=[request])
    with pytest.raises(TrainingInterrupted):
        loop.run()
    state = loop.capture_state()
    assert state["loop"] == {"epoch": 1}
    assert state["data"]["epoch_step"] == 0
    assert len(loop.model.history.history["loss"]) == 1
