"""Plain numbers out of Keras `logs`: scalars as floats, vector metrics one per component."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def scalar_logs(logs: Mapping[str, Any]) -> dict[str, float]:
    """`{"loss": 0.3, "f1_score/0": 0.8, "f1_score/1": 0.6}` from tensors, arrays or floats.

    A vector-valued metric (`F1Score(average=None)`) becomes one entry per component, named
    `<metric>/<index>` (flattened in row-major order), so sinks that take one number per name
    can record it.

    Example:
        >>> scalar_logs({"loss": np.float32(0.5), "f1": np.array([0.1, 0.2])})
        {'loss': 0.5, 'f1/0': 0.1..., 'f1/1': 0.2...}
    """
    values: dict[str, float] = {}
    for key, value in logs.items():
        array = np.asarray(value)
        if array.ndim == 0:
            values[key] = float(array)
        else:
            for index, item in enumerate(array.reshape(-1)):
                values[f"{key}/{index}"] = float(item)
    return values
