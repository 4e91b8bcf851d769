"""The run the state tests interrupt and resume, also run by `python -m` in a fresh process."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np

from harness import TrainingLoop
from tests.harness.problems import make_data, make_model, weights

EPOCHS = 3


class StopAt(keras.callbacks.Callback):
    """Requests a stop after batch `batch` of epoch `epoch`."""

    def __init__(self, loop_stop: Any = None, epoch: int = -1, batch: int = -1) -> None:
        super().__init__()
        self.loop_stop, self.at, self.epoch = loop_stop, (epoch, batch), -1

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if (self.epoch, batch) == self.at:
            self.loop_stop.request("test stop")

    stateless = True  # its stop is the test's, not the run's


def build_loop(
    engine: str,
    *,
    stop_at: tuple[int, int] = (-1, -1),
    accumulation_steps: int = 1,
    checkpointing: Any = None,
) -> TrainingLoop:
    """Dropout (a seed generator), shuffled arrays, EarlyStopping: all state that matters."""
    from harness.step.gradients import GradientPipeline

    model = make_model(dropout=0.3, steps_per_execution=1)
    stopper = StopAt()
    loop = TrainingLoop(
        model,
        make_data(),
        engine=engine,
        epochs=EPOCHS,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=5), stopper],
        gradients=GradientPipeline(model, accumulation_steps=accumulation_steps),
        checkpointing=checkpointing,
    )
    stopper.loop_stop, stopper.at = loop.stop, stop_at
    return loop


def main(engine: str, state_file: str, out: str) -> None:
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()  # as in the test process
    loop = build_loop(engine)
    loop.restore_state(pickle.loads(Path(state_file).read_bytes()))
    history = loop.run()
    np.savez(out, *weights(loop.model))
    Path(out).with_suffix(".json").write_text(json.dumps(history.history))


if __name__ == "__main__":
    main(*sys.argv[1:4])
