"""The training engine: the fit adapter, the GradientTape loop, callbacks, data, seeding.

Imports are lazy so `harness --help` does not pay for TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CustomEngine", "TrainingData", "DataError", "prepare_data", "seed_everything", "train"]

_LOCATIONS = {
    "CustomEngine": "harness.custom_engine",
    "TrainingData": "harness.data",
    "DataError": "harness.data",
    "prepare_data": "harness.data",
    "seed_everything": "harness.seeding",
    "train": "harness.trainer",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
