"""Turn what a data factory returns into training and validation inputs both engines accept.

Arrays are batched with `tf.data` (shuffled per epoch with a fixed seed, the last partial
batch kept or dropped); `tf.data.Dataset`, `keras.utils.PyDataset` and generators pass through
unchanged, exactly as `fit()` takes them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class DataError(ValueError):
    """The data a factory returned cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class TrainingData:
    """Inputs for one run.

    Attributes:
        train: what `fit()` accepts as `x` (batched `tf.data.Dataset`, `PyDataset`, generator).
        validation: the same for validation data, or None.
        sample_input: a small real batch of model inputs (for the model signature), or None
            where reading one would consume the data (generators).
        num_train_examples: number of training examples when known.
    """

    train: Any
    validation: Any | None = None
    sample_input: Any | None = None
    num_train_examples: int | None = None


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
    generator.

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

    if _is_arrays(train):
        arrays = _check_arrays(train, "train")
        if validation is None and validation_split > 0:
            arrays, validation = _split(arrays, validation_split)
        train_ds = _batched(arrays, batch_size, shuffle=shuffle, drop=drop_remainder, seed=seed)
        sample: Any = arrays[0][:batch_size]
        num = len(arrays[0])
    else:
        if validation_split > 0:
            raise DataError(
                "data.validation_split only works when the data factory returns arrays; "
                f"it returned {type(train).__name__}. Return {{'train': ..., 'validation': ...}} "
                "or set data.validation_split: 0"
            )
        _check_stream(train, "train")
        train_ds, sample, num = train, _peek_input(train), None

    val_ds = None
    if validation is not None:
        if _is_arrays(validation):
            val_arrays = _check_arrays(validation, "validation")
            val_ds = _batched(val_arrays, batch_size, shuffle=False, drop=False, seed=None)
        else:
            _check_stream(validation, "validation")
            val_ds = validation
    return TrainingData(train_ds, val_ds, sample_input=sample, num_train_examples=num)


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
    # Like Keras's validation_split: the last fraction of the examples, before shuffling.
    count = len(arrays[0])
    cut = count - int(round(count * fraction))
    if cut <= 0 or cut >= count:
        raise DataError(
            f"data.validation_split={fraction} leaves no training or no validation example "
            f"out of {count}; choose a fraction in (0, 1) that keeps both"
        )
    return tuple(a[:cut] for a in arrays), tuple(a[cut:] for a in arrays)


def _batched(
    arrays: tuple[np.ndarray, ...], batch_size: int, *, shuffle: bool, drop: bool, seed: int | None
) -> Any:
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle:
        dataset = dataset.shuffle(len(arrays[0]), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop)
    if drop and len(arrays[0]) < batch_size:
        raise DataError(
            f"data.drop_remainder is true but there are only {len(arrays[0])} examples for "
            f"batch_size={batch_size}, so no batch remains; lower data.batch_size"
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


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


def _peek_input(data: Any) -> Any | None:
    import keras
    import tensorflow as tf

    if isinstance(data, tf.data.Dataset):
        batch = next(iter(data.take(1)))
    elif isinstance(data, keras.utils.PyDataset):
        batch = data[0]
    else:
        return None  # a generator cannot be peeked without consuming it
    x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
    return tf.nest.map_structure(np.asarray, x)
