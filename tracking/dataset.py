"""`DatasetRecord`: what a run trained (or validated) on, for the sinks to record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DatasetContext = Literal["training", "validation"]


@dataclass(frozen=True)
class DatasetRecord:
    """A data set a run used.

    Attributes:
        name: what users call it (`digits`, `diabetes`, ...).
        source: where it came from: a factory's import path, a file, a URI.
        context: `training` or `validation`.
        features, targets: NumPy arrays when the data is arrays (the schema, digest and
            number of examples come from them); None for a stream (`tf.data`, a generator).
        num_examples: the number of examples when known without the arrays.

    Example:
        >>> DatasetRecord("digits", "experiments.zoo.datasets:load_digits", features=x, targets=y)
    """

    name: str
    source: str
    context: DatasetContext = "training"
    features: Any | None = None
    targets: Any | None = None
    num_examples: int | None = None
