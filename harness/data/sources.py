"""Where batches come from: one source per kind of input, each able to open a pass anywhere.

A *pass* is one iterator over the data: Keras opens one per epoch, or one for several epochs
when `steps_per_epoch` is set. A source opens pass `p` positioned after `skip` batches, so the
position in the data is a small record — (pass, batches read) — not a copy of the data:

- `ArraySource` shuffles arrays by a permutation of indices derived from (seed, pass) and
  gathers each batch, so any pass can be reopened at any batch in O(1).
- `DatasetSource` keeps a `tf.data` pipeline's own checkpointable iterator state.
- `PyDatasetSource` is (pass, batch index): its batch order is ours, its hooks are replayed.
- `GeneratorSource` cannot be repositioned: a generator resumes only at an epoch boundary.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from harness import keras_internals


class DataSource:
    """Batches of one kind of input, opened a pass at a time.

    Attributes:
        kind: a short name for messages and saved state.
        num_batches: batches per pass, or None when unknown (generators, filtered pipelines).
        mid_pass_resumable: whether `open(pass, skip=k)` can start after batch k.
        opens_eagerly: whether opening a pass has side effects that must happen when Keras
            would open it (a `tf.data` shuffle draws its seed when an iterator is created).
    """

    kind = "source"
    num_batches: int | None = None
    mid_pass_resumable = True
    opens_eagerly = False

    @property
    def element_spec(self) -> Any:
        """The structure, shapes and dtypes of a batch (for building the model)."""
        raise NotImplementedError

    def open(
        self, pass_index: int, *, skip: int = 0, iterator_state: Any = None, strategy: Any
    ) -> Any:
        """An iterator over pass `pass_index` that starts after `skip` batches."""
        raise NotImplementedError

    def iterator_state(self, iterator: Any) -> Any:
        """What `open(..., iterator_state=...)` needs beyond (pass, skip); None if nothing."""
        return None

    def peek_input(self) -> Any | None:
        """A small real batch of model inputs, or None where reading one would consume data."""
        return None

    def on_epoch_begin(self) -> None:
        """Called where Keras calls its data adapter's `on_epoch_begin`."""

    def on_epoch_end(self) -> None:
        """Called where Keras calls its data adapter's `on_epoch_end`."""

    def replay_hooks(self, *, begins: int, ends: int) -> None:
        """Call the user's epoch hooks as often as an uninterrupted run had (resume)."""

    def state(self) -> dict[str, Any]:
        """Settings a fresh process may not reproduce by itself (a drawn seed)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back what `state` returned."""


def _iterate(dataset: Any, strategy: Any) -> Any:
    return iter(strategy.experimental_distribute_dataset(dataset))


def _inputs(batch: Any) -> Any:
    import tensorflow as tf

    x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
    return tf.nest.map_structure(np.asarray, x)


class ArraySource(DataSource):
    """NumPy arrays `(x, y[, sample_weight])`, batched and reshuffled every pass.

    Pass `p` visits the examples in the order `permutation(seed, p)` and gathers each batch, so
    reopening any pass at any batch costs nothing and a saved position holds no data.

    Example:
        >>> source = ArraySource((x, y), batch_size=32, seed=0)
        >>> next(iter(source.dataset(pass_index=3, skip=5)))  # batch 5 of the 4th pass
    """

    kind = "arrays"

    def __init__(
        self,
        arrays: tuple[np.ndarray, ...],
        *,
        batch_size: int,
        shuffle: bool = True,
        drop_remainder: bool = False,
        seed: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: batch_size={batch_size}")
        self.arrays = arrays
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        # Without a seed, draw one (from Python's seeded `random` under `seed_everything`);
        # it is part of the saved state, so a resumed run reshuffles the same way.
        self.seed = random.randrange(2**31) if seed is None else seed
        self.num_examples = len(arrays[0])
        full, rest = divmod(self.num_examples, batch_size)
        self.num_batches = full if drop_remainder or not rest else full + 1
        self._tensors: tuple[Any, ...] | None = None

    def order(self, pass_index: int) -> np.ndarray:
        """The example indices of pass `pass_index`, in the order they are visited."""
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, pass_index]).permutation(self.num_examples)

    def dataset(self, pass_index: int, *, skip: int = 0) -> Any:
        """A `tf.data.Dataset` of pass `pass_index` from batch `skip` on."""
        import tensorflow as tf

        if self._tensors is None:
            self._tensors = tuple(tf.constant(array) for array in self.arrays)
        tensors = self._tensors

        def gather(indices: Any) -> tuple[Any, ...]:
            return tuple(tf.gather(tensor, indices) for tensor in tensors)

        indices = tf.data.Dataset.from_tensor_slices(self.order(pass_index))
        batches = indices.batch(self.batch_size, drop_remainder=self.drop_remainder).skip(skip)
        # A gather is cheap: one map thread keeps up, and the prefetch overlaps it with training.
        return batches.map(gather).prefetch(tf.data.AUTOTUNE)

    def as_dataset(self, passes: int) -> Any:
        """`passes` passes back to back: `model.fit(it, steps_per_epoch=num_batches)` sees
        exactly the batches the harness trains on (the reference in tests)."""
        dataset = self.dataset(0)
        for pass_index in range(1, passes):
            dataset = dataset.concatenate(self.dataset(pass_index))
        return dataset

    @property
    def element_spec(self) -> Any:
        return self.dataset(0).element_spec

    def open(
        self, pass_index: int, *, skip: int = 0, iterator_state: Any = None, strategy: Any
    ) -> Any:
        return _iterate(self.dataset(pass_index, skip=skip), strategy)

    def peek_input(self) -> Any:
        return self.arrays[0][: self.batch_size]

    def state(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def restore(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])


class DatasetSource(DataSource):
    """A user's batched `tf.data.Dataset`; its iterator's own state marks the position."""

    kind = "tf.data"
    opens_eagerly = True

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        cardinality = int(dataset.cardinality())
        self.num_batches = cardinality if cardinality >= 0 else None
        self._distributed: dict[int, Any] = {}

    @property
    def element_spec(self) -> Any:
        return self.dataset.element_spec

    def open(
        self, pass_index: int, *, skip: int = 0, iterator_state: Any = None, strategy: Any
    ) -> Any:
        # Distribute once: the pipeline's shuffle seeds live in the dataset object.
        key = id(strategy)
        if key not in self._distributed:
            self._distributed[key] = strategy.experimental_distribute_dataset(self.dataset)
        iterator = iter(self._distributed[key])
        if iterator_state is not None:
            _restore_iterator(iterator, iterator_state)
        else:
            for _ in range(skip):
                next(iterator)
        return iterator

    def iterator_state(self, iterator: Any) -> Any:
        return _save_iterator(iterator)

    def peek_input(self) -> Any:
        return _inputs(next(iter(self.dataset.take(1))))


def _save_iterator(iterator: Any) -> dict[str, bytes]:
    """A `tf.data` iterator's checkpoint, as file name → bytes (kept in memory)."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="harness-iterator-") as tmp:
        tf.train.Checkpoint(iterator=iterator).write(str(Path(tmp) / "iterator"))
        return {path.name: path.read_bytes() for path in Path(tmp).iterdir()}


def _restore_iterator(iterator: Any, files: dict[str, bytes]) -> None:
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="harness-iterator-") as tmp:
        for name, content in files.items():
            (Path(tmp) / name).write_bytes(content)
        tf.train.Checkpoint(iterator=iterator).read(str(Path(tmp) / "iterator")).assert_consumed()


class PyDatasetSource(DataSource):
    """A `keras.utils.PyDataset` (with its workers): batch order and position are ours.

    Batches are read in the order `permutation(seed, pass)` of batch indices (or in index order
    without shuffling) through Keras's own adapter, so workers and multiprocessing behave as in
    `fit()`. The dataset's `on_epoch_begin` / `on_epoch_end` are called where `fit()` calls
    them, and replayed on resume.
    """

    kind = "PyDataset"

    def __init__(self, py_dataset: Any, *, shuffle: bool = False, seed: int | None = None) -> None:
        self.py_dataset = py_dataset
        self.shuffle = shuffle
        self.seed = random.randrange(2**31) if seed is None else seed
        self.num_batches = py_dataset.num_batches
        self._adapter: Any = None
        self._spec: Any = None

    @property
    def element_spec(self) -> Any:
        if self._spec is None:
            self._spec = self._new_adapter(0).get_tf_dataset().element_spec
        return self._spec

    def _new_adapter(self, pass_index: int, skip: int = 0) -> Any:
        order = None
        if self.num_batches is not None:
            order = np.arange(self.num_batches)
            if self.shuffle:
                order = np.random.default_rng([self.seed, pass_index]).permutation(order)
        return keras_internals.PyDatasetAdapter(_PassView(self.py_dataset, order, skip))

    def open(
        self, pass_index: int, *, skip: int = 0, iterator_state: Any = None, strategy: Any
    ) -> Any:
        self._stop_workers()
        self._adapter = self._new_adapter(pass_index, skip)
        return _iterate(self._adapter.get_tf_dataset(), strategy)

    def _stop_workers(self) -> None:
        if self._adapter is not None and self._adapter.enqueuer is not None:
            self._adapter.enqueuer.stop()

    def peek_input(self) -> Any:
        return _inputs(self.py_dataset[0])

    def on_epoch_begin(self) -> None:
        self.py_dataset.on_epoch_begin()

    def on_epoch_end(self) -> None:
        self._stop_workers()
        self.py_dataset.on_epoch_end()

    def replay_hooks(self, *, begins: int, ends: int) -> None:
        # In the order they alternate in a run: end (reset), then begin/end per epoch.
        for index in range(max(begins, ends)):
            if index < ends:
                self.py_dataset.on_epoch_end()
            if index < begins:
                self.py_dataset.on_epoch_begin()

    def state(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def restore(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])


class _PassView(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches `base[order[skip:]]` with the base's workers; hooks stay with the base."""

    def __init__(self, base: Any, order: np.ndarray | None, skip: int) -> None:
        super().__init__(
            workers=base.workers,
            use_multiprocessing=base.use_multiprocessing,
            max_queue_size=base.max_queue_size,
        )
        self._base = base
        self._order = order
        self._skip = skip

    @property
    def num_batches(self) -> int | None:
        return None if self._order is None else len(self._order) - self._skip

    def __len__(self) -> int:
        return self.num_batches or 0

    def __getitem__(self, index: int) -> Any:
        position = index + self._skip
        return self._base[position if self._order is None else int(self._order[position])]


class GeneratorSource(DataSource):
    """A Python generator; read as `fit()` reads it. It cannot be repositioned."""

    kind = "generator"
    mid_pass_resumable = False

    def __init__(self, generator: Any) -> None:
        self._adapter = keras_internals.GeneratorDataAdapter(generator)
        self._dataset = self._adapter.get_tf_dataset()

    @property
    def element_spec(self) -> Any:
        return self._dataset.element_spec

    def open(
        self, pass_index: int, *, skip: int = 0, iterator_state: Any = None, strategy: Any
    ) -> Any:
        return _iterate(self._dataset, strategy)


def as_source(data: Any, *, shuffle: bool = False, seed: int | None = None) -> DataSource:
    """The source for what `fit()` accepts as `x` (arrays as a tuple, tf.data, ...)."""
    import inspect
    from collections.abc import Iterator

    import tensorflow as tf

    if isinstance(data, DataSource):
        return data
    if isinstance(data, tf.data.Dataset):
        return DatasetSource(data)
    if isinstance(data, keras.utils.PyDataset):
        return PyDatasetSource(data, shuffle=shuffle, seed=seed)
    if inspect.isgenerator(data) or isinstance(data, Iterator):
        return GeneratorSource(data)
    raise TypeError(
        "data must be an ArraySource, a tf.data.Dataset, a keras.utils.PyDataset or a "
        f"generator. Received: {type(data).__name__}"
    )
