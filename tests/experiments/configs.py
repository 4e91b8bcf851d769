"""A tiny valid experiment config for tests, written to a temp file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

TINY: dict[str, Any] = {
    "model": {"name": "mlp", "params": {"input_shape": [64], "hidden_units": [16]}},
    # The file's order (not the shipped configs' shuffled one): the tests' scenarios were set up
    # on it (e.g. a val_loss that bottoms out before the last epoch).
    "data": {
        "name": "digits",
        "params": {"limit": 300, "shuffle_seed": None},
        "batch_size": 32,
        "validation_split": 0.2,
    },
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "trainer": {
        "engine": "fit",
        "epochs": 2,
        "seed": 3,
        "log_every_n_steps": 2,
        "progress": "none",
    },
    "tracking": {"experiment": "tests"},
}


def write_config(
    directory: Path, changes: dict[str, Any] | None = None, name: str = "tiny.yaml"
) -> Path:
    """Write TINY with `changes` ({"trainer.epochs": 3} style dotted keys) applied."""
    path = directory / name
    path.write_text(yaml.safe_dump(tiny_with(changes), sort_keys=False))
    return path


def tiny_with(changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of TINY with `changes` ({"trainer.epochs": 3} style dotted keys) applied."""
    config = copy.deepcopy(TINY)
    for dotted, value in (changes or {}).items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config
