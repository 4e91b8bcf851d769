"""Training data: sources per kind of input, and an epoch iterator whose position is ours."""

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
