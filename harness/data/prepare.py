"""Turn what a data factory returns into the training and validation sources of a run.

Arrays become an `ArraySource` (batched, reshuffled every pass by a seeded permutation, the
last partial batch kept or dropped); a `tf.data.Dataset`, a `keras.utils.PyDataset` or a
generator is read exactly as `fit()` reads it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.data.sources import ArraySource, DataSource, as_source


class DataError(ValueError):
    """The data a factory returned cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class TrainingData:
    """Inputs for one run.

    Attributes:
        train: the training batches.
        validation: the validation batches, or None.
        num_train_examples: number of training examples when known.
    """

    train: DataSource
    validation: DataSource | None = None
    num_train_examples: int | None = None

    def peek_input(self) -> Any | None:
        """A small real batch of model inputs (for checks and the model signature), or None.

        Reading a `tf.data` batch creates an iterator, which draws a shuffle's next seed, so
        this is never called during training; a generator cannot be peeked at all.
        """
        return self.train.peek_input()


def prepare_data(
    source: Any,
    *,
    batch_size: int,
    validation_split: float = 0.0,
    shuffle: bool = True,
    drop_remainder: bool = False,
    seed: int | None = None,
) -> TrainingData:
    """Build `TrainingData` from a data factory's return value.

    `source` is `(x, y)` or `(x, y, sample_weight)` arrays, or a mapping with `train` and an
    optional `validation` entry, each arrays, a `tf.data.Dataset`, a `PyDataset` or a
    generator. `shuffle` reshuffles arrays (and a `PyDataset`'s batch order) every pass.

    Raises:
        DataError: the data is malformed; the message names the rule and the value received.
    """
    if isinstance(source, Mapping):
        unknown = sorted(set(source) - {"train", "validation"})
        if "train" not in source or unknown:
            raise DataError(
                "a data factory's mapping must have a 'train' entry and optionally "
                f"'validation'. Received keys: {sorted(source)}"
            )
        train, validation = source["train"], source.get("validation")
    else:
        train, validation = source, None

    num = None
    if _is_arrays(train):
        arrays = _check_arrays(train, "train")
        if validation is None and validation_split > 0:
            arrays, validation = _split(arrays, validation_split)
        train_source: DataSource = _array_source(
            arrays, batch_size, shuffle=shuffle, drop=drop_remainder, seed=seed
        )
        num = len(arrays[0])
    else:
        if validation_split > 0:
            raise DataError(
                "data.validation_split only works when the data factory returns arrays; "
                f"it returned {type(train).__name__}. Return {{'train': ..., 'validation': ...}} "
                "or set data.validation_split: 0"
            )
        _check_stream(train, "train")
        train_source = as_source(train, shuffle=shuffle, seed=seed)

    val_source: DataSource | None = None
    if validation is not None:
        if _is_arrays(validation):
            val_arrays = _check_arrays(validation, "validation")
            val_source = _array_source(val_arrays, batch_size, shuffle=False, drop=False, seed=0)
        else:
            _check_stream(validation, "validation")
            val_source = as_source(validation)
    return TrainingData(train_source, val_source, num_train_examples=num)


def _is_arrays(data: Any) -> bool:
    return (
        isinstance(data, tuple | list)
        and 2 <= len(data) <= 3
        and all(isinstance(part, np.ndarray) or hasattr(part, "__array__") for part in data)
    )


def _check_arrays(data: Any, name: str) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(part) for part in data)
    lengths = [len(part) for part in arrays]
    if len(set(lengths)) != 1:
        raise DataError(
            f"{name} arrays must all have the same number of examples (x, y[, sample_weight]). "
            f"Received lengths {lengths}; fix the data factory"
        )
    if lengths[0] == 0:
        raise DataError(f"{name} data is empty (0 examples); fix the data factory")
    if np.issubdtype(arrays[0].dtype, np.floating) and not np.isfinite(arrays[0]).all():
        raise DataError(f"{name} inputs contain NaN or infinite values; clean the data first")
    return arrays


def _split(
    arrays: tuple[np.ndarray, ...], fraction: float
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    # Exactly Keras's validation_split: the last fraction of the examples, before shuffling,
    # with the training part floored (442 examples at 0.2 -> 353 for training).
    count = len(arrays[0])
    cut = int(math.floor(count * (1.0 - fraction)))
    if cut <= 0 or cut >= count:
        raise DataError(
            f"data.validation_split={fraction} leaves no training or no validation example "
            f"out of {count}; choose a fraction in (0, 1) that keeps both"
        )
    return tuple(a[:cut] for a in arrays), tuple(a[cut:] for a in arrays)


def _array_source(
    arrays: tuple[np.ndarray, ...], batch_size: int, *, shuffle: bool, drop: bool, seed: int | None
) -> ArraySource:
    if drop and len(arrays[0]) < batch_size:
        raise DataError(
            f"data.drop_remainder is true but there are only {len(arrays[0])} examples for "
            f"batch_size={batch_size}, so no batch remains; lower data.batch_size"
        )
    return ArraySource(
        arrays, batch_size=batch_size, shuffle=shuffle, drop_remainder=drop, seed=seed
    )


def _check_stream(data: Any, name: str) -> None:
    import keras
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset | keras.utils.PyDataset | Iterator):
        return
    if inspect.isgenerator(data):
        return
    raise DataError(
        f"{name} data must be arrays (x, y), a tf.data.Dataset, a keras.utils.PyDataset or a "
        f"generator. Received {type(data).__name__}; fix the data factory"
    )
