"""The data position is ours: stop at batch k of epoch e, restore into a fresh iterator over
fresh data objects, and the remaining batches and the next epochs are exactly those of an
uninterrupted run — for each kind of input."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness.data import EpochIterator, prepare_data
from harness.data.sources import DataSource
from tests.harness.problems import digits

EPOCHS = 3
STOP = (1, 4)  # (epoch, batch) after which the first run stops


class ShufflingBatches(keras.utils.PyDataset):
    """A user's PyDataset that reshuffles its examples with NumPy in `on_epoch_end`."""

    def __init__(self, x: np.ndarray, y: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.x, self.y = x, y
        self.index = np.arange(len(x))

    def __len__(self) -> int:
        return len(self.x) // 25

    def __getitem__(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        part = self.index[batch * 25 : (batch + 1) * 25]
        return self.x[part], self.y[part]

    def on_epoch_end(self) -> None:
        np.random.shuffle(self.index)


def _arrays() -> DataSource:
    return prepare_data(digits(300), batch_size=32, seed=11).train


def _tf_data(filtered: bool) -> Callable[[], DataSource]:
    def make() -> DataSource:
        tf.random.set_seed(7)  # a fresh process: same global seed, same pipeline
        x, y = digits(300)
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(300)
        if filtered:
            dataset = dataset.filter(lambda features, label: label >= 0)
        return prepare_data({"train": dataset.batch(32)}, batch_size=32).train

    return make


def _py_dataset() -> DataSource:
    np.random.seed(5)  # a fresh process: same seed before the data is built
    x, y = digits(300)
    return prepare_data({"train": ShufflingBatches(x, y, workers=2)}, batch_size=25, seed=2).train


KINDS: dict[str, tuple[Callable[[], DataSource], int | None]] = {
    "arrays": (_arrays, None),
    "arrays with steps_per_epoch": (_arrays, 5),  # a pass spans two epochs
    "tf.data": (_tf_data(filtered=False), None),
    "tf.data of unknown length": (_tf_data(filtered=True), None),
    "PyDataset": (_py_dataset, None),
}


def _labels(iterator: Any) -> list[int]:
    _, y = next(iterator)
    return np.asarray(y).tolist()


def _epochs(
    epochs: EpochIterator, first_epoch: int, *, stop: tuple[int, int] | None = None
) -> tuple[list[list[list[int]]], dict[str, Any] | None]:
    """Labels of every batch of epochs `first_epoch`... ; with `stop`, the state there."""
    seen: list[list[list[int]]] = []
    for epoch in range(first_epoch, EPOCHS):
        batches: list[list[int]] = []
        seen.append(batches)
        with epochs.catch_stop_iteration():
            for first, _, iterator in epochs:
                batches.append(_labels(iterator))
                if (epoch, first) == stop:
                    return seen, pickle.loads(pickle.dumps(epochs.state()))
    return seen, None


def _iterator(make: Callable[[], DataSource], steps_per_epoch: int | None) -> EpochIterator:
    epochs = EpochIterator(
        make(), strategy=tf.distribute.get_strategy(), steps_per_epoch=steps_per_epoch
    )
    epochs.reset()
    return epochs


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_restored_position_continues_exactly_where_it_stopped(kind: str) -> None:
    make, steps_per_epoch = KINDS[kind]
    uninterrupted, _ = _epochs(_iterator(make, steps_per_epoch), 0)
    assert uninterrupted[1] != uninterrupted[2], "epochs must differ for the test to mean much"

    stopped, state = _epochs(_iterator(make, steps_per_epoch), 0, stop=STOP)
    assert state is not None
    assert stopped[1] == uninterrupted[1][: STOP[1] + 1]

    resumed = EpochIterator(
        make(), strategy=tf.distribute.get_strategy(), steps_per_epoch=steps_per_epoch
    )
    resumed.restore(state)
    rest, _ = _epochs(resumed, STOP[0])
    assert rest[0] == uninterrupted[1][STOP[1] + 1 :]
    assert rest[1:] == uninterrupted[2:]


def test_array_positions_hold_no_data() -> None:
    epochs = _iterator(_arrays, None)
    _epochs(epochs, 0, stop=STOP)
    assert len(pickle.dumps(epochs.state())) < 1_000  # the arrays are ~77 KB


def test_a_generator_resumes_at_the_next_epoch_and_says_so() -> None:
    x, y = digits(300)

    def batches() -> Any:
        while True:
            for start in range(0, 300, 30):
                yield x[start : start + 30], y[start : start + 30]

    def make() -> DataSource:
        return prepare_data({"train": batches()}, batch_size=30).train

    _, state = _epochs(_iterator(make, 4), 0, stop=(1, 2))
    resumed = EpochIterator(make(), strategy=tf.distribute.get_strategy(), steps_per_epoch=4)
    with pytest.warns(UserWarning, match="generator input cannot be repositioned mid-epoch"):
        resumed.restore(state)
    assert resumed.skipped_epoch_rest
    rest, _ = _epochs(resumed, 2)
    # A fresh generator starts from its beginning, and a whole epoch is read.
    assert rest[0] == [y[i : i + 30].tolist() for i in range(0, 120, 30)]


def test_a_position_is_restored_only_into_the_same_kind_of_data() -> None:
    _, state = _epochs(_iterator(_arrays, None), 0, stop=STOP)
    other = EpochIterator(_py_dataset(), strategy=tf.distribute.get_strategy())
    with pytest.raises(ValueError, match="cannot restore a position in arrays data into PyDataset"):
        other.restore(state)
