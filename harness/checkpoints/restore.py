"""A checkpoint's weights back into a model: the export of the best checkpoint's model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.state import Parts, VariablesState


def load_weights(state: Mapping[str, Any], model: Any, *, ema: Any | None = None) -> None:
    """Put the model weights of a captured state (a checkpoint's) into `model`, and with
    `ema` (a `WeightAverage` of it) the averaged weights into `ema`; nothing else changes."""
    VariablesState("model", lambda: model.variables).restore(state[Parts.MODEL])
    if ema is not None:
        ema.restore(state[Parts.EMA])
