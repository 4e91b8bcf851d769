"""When the loop saves: the `Checkpointing` policy, and the `Saver` that applies it.

Saves come at optimizer-update boundaries only (never mid-accumulation): when training starts
(step 0), every n updates' worth of batches, at every n-th epoch end, after n minutes, when a
stop is requested and when training ends. A save that fails is tried again at the next
boundary; when saves keep failing, or the last one does, the run stops
(`CheckpointsFailing`). What is saved is the loop's whole captured state; the writing happens on the
store's writer thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.checkpoints import plain
from harness.checkpoints.store import CheckpointStore


@dataclass
class Checkpointing:
    """When the training loop saves into `store`: always at optimizer-update boundaries.

    Args:
        store: where checkpoints go.
        every_n_steps: every n optimizer updates' worth of batches (None: not by steps).
        every_n_epochs: at the end of every n-th epoch (None: not by epochs).
        every_n_minutes: at the first update boundary after n minutes since the last save.
        metadata: stored in each manifest (the MLflow run id, the config).
        before_write: called on the writer thread before a checkpoint is put in place, e.g.
            a metric sink's flush: what was logged up to a checkpoint is delivered before the
            checkpoint exists, so a run resumed from it cannot have lost those metrics.
        after_write: called on the writer thread with the checkpoint's path once it is in
            place (e.g. to upload it); its failure is warned about, the checkpoint stays.

    The loop also saves when training starts (step 0, before the first update), when a stop
    is requested (SIGTERM, SIGINT), before it raises `TrainingInterrupted`, and when training
    ends.
    """

    store: CheckpointStore
    every_n_steps: int | None = None
    every_n_epochs: int | None = 1
    every_n_minutes: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    before_write: Callable[[], None] | None = None
    after_write: Callable[[Path], None] | None = None


class Saver:
    """Saves the loop's state into `policy.store` when the policy says so.

    Args:
        policy: when, and where.
        capture: the loop's state at this step boundary, its step events delivered (tensors
            read now; the writer thread copies them out).
        step: the global step (optimizer updates).
        accumulation_steps: batches per optimizer update.
    """

    def __init__(
        self,
        policy: Checkpointing,
        *,
        capture: Callable[[], dict[str, Any]],
        step: Callable[[], int],
        accumulation_steps: int,
    ) -> None:
        self.policy, self.store = policy, policy.store
        self._capture, self._step, self._per_update = capture, step, accumulation_steps
        self._batches = 0  # trained since the last save
        self._last_time = time.monotonic()
        self._epoch_batch = 0  # batches of the epoch in progress already trained
        self._fresh = False  # nothing trained since the last save

    def after_batches(self, count: int, epoch_batch: int, *, epoch: int, boundary: bool) -> None:
        """`count` more batches trained, `epoch_batch` of epoch `epoch` so far."""
        self._batches += count
        self._epoch_batch = epoch_batch
        self._fresh = False
        if not boundary:
            return
        if self.store.last_failed:  # retried at the next boundary, not the next due one
            self.now(epoch=epoch)
            return
        policy = self.policy
        by_steps = policy.every_n_steps and self._batches >= policy.every_n_steps * self._per_update
        minutes = policy.every_n_minutes
        by_time = minutes and time.monotonic() - self._last_time >= minutes * 60
        if by_steps or by_time:
            self.now(epoch=epoch)

    def at_epoch_end(self, logs: Mapping[str, Any], *, epochs_done: int) -> None:
        self._epoch_batch = 0
        every = self.policy.every_n_epochs
        if every and epochs_done % every == 0:
            self.now(epoch=epochs_done, epoch_end=True, metrics=logs)

    def at_end(self, logs: Mapping[str, Any] | None, *, epoch: int) -> None:
        """The final save, waited for: its failure stops the run (`CheckpointsFailing`)."""
        if self._fresh and not self.store.last_failed:
            self.store.wait(final=True)
            return
        self.now(epoch=epoch, epoch_end=self._epoch_batch == 0, metrics=logs or {}, wait=True)

    def now(
        self,
        *,
        epoch: int,
        epoch_end: bool = False,
        metrics: Mapping[str, Any] | None = None,
        wait: bool = False,
    ) -> None:
        """Save at once (`epoch`: the epoch in progress, or the next after an epoch end)."""
        if self._fresh and not self.store.last_failed:
            if wait:
                self.store.wait(final=True)
            return
        scalars = {k: float(v) for k, v in (metrics or {}).items() if np.ndim(v) == 0}
        state = self._capture()
        plain.check(state)  # here, on the training thread: a callback's odd state is named now
        self.store.save(
            state,
            step=self._step(),
            epoch=epoch,
            batch=self._epoch_batch,
            epoch_end=epoch_end,
            metrics=scalars,
            metadata=self.policy.metadata,
            before_write=self.policy.before_write,
            after_write=self.policy.after_write,
        )
        self._batches, self._last_time, self._fresh = 0, time.monotonic(), True
        if wait:
            self.store.wait(final=True)
