"""`EpochIterator`: one epoch of executions at a time, from a position the harness owns.

It follows `keras.src.trainers.epoch_iterator.EpochIterator` step for step — when a pass is
opened (a fresh one each epoch, or one kept across epochs with `steps_per_epoch`), where the
data's epoch hooks run, how a pass of unknown length ends — so both engines see exactly the
batches `Model.fit` would. Unlike Keras's, its position can be saved and restored:
`state()` / `restore(state)`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.data.sources import DataSource


class EpochIterator:
    """Yields `(first_batch, last_batch, iterator)` per execution of one epoch.

    Args:
        source: where batches come from.
        strategy: the model's distribution strategy.
        steps_per_epoch: batches per epoch; None for a whole pass.
        steps_per_execution: batches per compiled call.
    """

    def __init__(
        self,
        source: DataSource,
        *,
        strategy: Any,
        steps_per_epoch: int | None = None,
        steps_per_execution: int = 1,
    ) -> None:
        self.source = source
        self.steps_per_epoch = steps_per_epoch
        self.steps_per_execution = steps_per_execution
        self._strategy = strategy
        self._num_batches = source.num_batches
        self._iterator: Any = None
        self._pending: tuple[int, Any] | None = None  # (skip, iterator state) of a lazy open
        self._pass = -1  # index of the current pass
        self._seen = 0  # batches asked of the current pass (Keras's `_steps_seen`)
        self._epoch_step = 0  # next batch index within the current epoch
        self._hooks = [0, 0]  # calls of the source's on_epoch_begin / on_epoch_end so far
        self._resumed = False
        self.skipped_epoch_rest = False

    @property
    def num_batches(self) -> int | None:
        """Batches per epoch, once known (as `fit()` reports it in `params["steps"]`)."""
        return self.steps_per_epoch or self._num_batches

    @property
    def position(self) -> int:
        """The index, within the epoch, of the next batch (past 0 in an epoch resumed)."""
        return self._epoch_step

    @property
    def element_spec(self) -> Any:
        return self.source.element_spec

    @property
    def resuming(self) -> bool:
        """Whether the next epoch continues one that was interrupted (restored mid-epoch)."""
        return self._resumed

    def reset(self) -> None:
        """Forget the current pass, as Keras does before training and before each evaluation."""
        self._iterator, self._pending = None, None
        self._num_batches = self.source.num_batches
        self._seen = 0
        self._epoch_step = 0
        self._end_hook()

    def __iter__(self) -> Iterator[tuple[int, int, Any]]:
        per_call = self.steps_per_execution
        resumed, start = self._resumed, self._epoch_step
        self._resumed = False
        if not resumed:
            self._begin_hook()
        steps = self.steps_per_epoch or self._num_batches or -1
        if steps > 0:
            if not resumed and (self._has_no_pass() or self.steps_per_epoch is None):
                self._open()
            for step in range(start, steps, per_call):
                if self._num_batches and self._seen >= self._num_batches:
                    if self.steps_per_epoch:
                        _ran_out_warning()
                    break
                self._seen += per_call
                self._epoch_step = step + per_call
                yield step, step + per_call - 1, self._current()
            if self._num_batches and self._seen >= self._num_batches:
                self._open()
        else:
            if not resumed:
                self._open()
            step = start - per_call
            while True:
                step += per_call
                self._seen = self._epoch_step = step + per_call
                yield step, step + per_call - 1, self._current()
        self._epoch_step = 0
        self._end_hook()

    @contextmanager
    def catch_stop_iteration(self) -> Iterator[None]:
        """Ends the epoch when the data runs out, as Keras's iterator does."""
        import tensorflow as tf

        try:
            yield
        except (StopIteration, tf.errors.OutOfRangeError):
            if self._num_batches is None:
                self._num_batches = self._seen
            elif self.steps_per_epoch:
                _ran_out_warning()
            self._iterator, self._pending = None, None
            self._epoch_step = 0
            self._end_hook()

    def state(self) -> dict[str, Any]:
        """The position in the data: small, and never a copy of the data."""
        if self._pending is not None and self.source.opens_eagerly:
            self._current()
        iterator_state = None
        if self._iterator is not None and self._pending is None:
            iterator_state = self.source.iterator_state(self._iterator)
        return {
            "kind": self.source.kind,
            "pass": self._pass,
            "seen": self._seen,
            "epoch_step": self._epoch_step,
            "num_batches": self._num_batches,
            "hooks": list(self._hooks),
            "open": not self._has_no_pass(),
            "iterator": iterator_state,
            "source": self.source.state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state` (taken by `state()` of an iterator over the same data)."""
        if state["kind"] != self.source.kind:
            raise ValueError(
                f"cannot restore a position in {state['kind']} data into {self.source.kind} "
                "data; resume with the data the run was started with"
            )
        self.source.restore(state["source"])
        begins, ends = state["hooks"]
        self.source.replay_hooks(begins=begins - self._hooks[0], ends=ends - self._hooks[1])
        self._hooks = [begins, ends]
        self._num_batches = state["num_batches"]
        self._pass, self._seen, self._epoch_step = state["pass"], state["seen"], state["epoch_step"]
        self._iterator, self._pending = None, None
        self.skipped_epoch_rest = False
        if state["open"]:
            if self._epoch_step and not self.source.mid_pass_resumable:
                self._skip_rest_of_epoch()
            else:
                self._pending = (self._seen, state["iterator"])
                if self.source.opens_eagerly:
                    self._current()
        self._resumed = self._epoch_step > 0

    def _skip_rest_of_epoch(self) -> None:
        warnings.warn(
            f"{self.source.kind} input cannot be repositioned mid-epoch (stopped after batch "
            f"{self._epoch_step - 1}): resuming at the start of the next epoch, reading the "
            "data from where it is now. Return arrays, a tf.data.Dataset or a PyDataset from "
            "the data factory for exact mid-epoch resume.",
            stacklevel=3,
        )
        self._pass, self._seen, self._epoch_step = self._pass + 1, 0, 0
        self._pending = (0, None)
        self.skipped_epoch_rest = True

    def _has_no_pass(self) -> bool:
        return self._iterator is None and self._pending is None

    def _open(self) -> None:
        if self._pending == (0, None) and not self.source.opens_eagerly:
            return  # Keras opens twice at an epoch boundary; a lazy fresh pass is already due
        self._pass += 1
        self._seen = 0
        self._iterator, self._pending = None, (0, None)
        if self.source.opens_eagerly:
            self._current()

    def _current(self) -> Any:
        if self._pending is not None:
            skip, iterator_state = self._pending
            self._iterator = self.source.open(
                self._pass, skip=skip, iterator_state=iterator_state, strategy=self._strategy
            )
            self._pending = None
        return self._iterator

    def _begin_hook(self) -> None:
        self._hooks[0] += 1
        self.source.on_epoch_begin()

    def _end_hook(self) -> None:
        self._hooks[1] += 1
        self.source.on_epoch_end()


def _ran_out_warning() -> None:
    warnings.warn(
        "Your input ran out of data; interrupting the epoch. Make sure that your dataset or "
        "generator can generate at least `steps_per_epoch * epochs` batches, e.g. with "
        "`.repeat()`.",
        stacklevel=4,
    )
