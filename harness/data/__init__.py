"""Training data: sources per kind of input, and an epoch iterator whose position is ours.

`sources`: arrays, `tf.data`, a `PyDataset`, a generator, each able to open a pass anywhere;
`epochs`: the loop's iterator over a source, its position saved and restored; `prepare`:
the user's data checked and split into training and validation sources.

May import: keras, tensorflow, NumPy, `harness.keras_internals`.
"""

from harness.data.epochs import EpochIterator
from harness.data.prepare import DataError, TrainingData, prepare_data
from harness.data.sources import (
    ArraySource,
    DatasetSource,
    DataSource,
    GeneratorSource,
    PyDatasetSource,
    as_source,
)

__all__ = [
    "ArraySource",
    "DataError",
    "DataSource",
    "DatasetSource",
    "EpochIterator",
    "GeneratorSource",
    "PyDatasetSource",
    "TrainingData",
    "as_source",
    "prepare_data",
]
