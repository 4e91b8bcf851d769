"""The training engine: one loop for both engines, data sources, callbacks, state, stopping.

- `loop`: `TrainingLoop`, the outer loop both engines share (Keras's events, the data
  position, the global step, the registry of savable state); `trainer`: `train()`.
- `step/`: how one batch becomes an update; `data/`: sources whose position is ours;
  `callbacks/`: our callbacks and the step events; `checkpoints/`: saving and restoring.
- `state`: the registry of savable state; `stopping`: stop at a step boundary; `schedules`,
  `finetune`, `weight_decay`, `precision`, `devices`, `seeding`: what a run sets up.
- `keras_internals`: the one door to Keras's private pieces and the optimizer patching.

May import: keras, tensorflow, NumPy, rich. Never mlflow, optuna, `tracking` or
`experiments`: sinks are passed in. Imports are lazy so `harness --help` does not pay for
TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DataError",
    "StopSignal",
    "TrainingData",
    "TrainingInterrupted",
    "TrainingLoop",
    "prepare_data",
    "seed_everything",
    "stop_on_signals",
    "train",
]

_LOCATIONS = {
    "DataError": "harness.data",
    "StopSignal": "harness.stopping",
    "TrainingData": "harness.data",
    "TrainingInterrupted": "harness.stopping",
    "TrainingLoop": "harness.loop",
    "prepare_data": "harness.data",
    "seed_everything": "harness.seeding",
    "stop_on_signals": "harness.stopping",
    "train": "harness.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
