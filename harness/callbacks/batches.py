"""Batch indices as `fit()` reports them to callbacks."""

from __future__ import annotations


def batches_done(batch: int, steps: int | None) -> int:
    """Batches finished in the epoch after the batch-end event for index `batch`.

    With `steps_per_execution`, `fit()` reports a short last execution by its nominal index
    (batch 11 of a 10-batch epoch in executions of 3); both engines do, for parity, so
    callbacks clamp it to the epoch's length when that is known.
    """
    return min(batch + 1, steps) if steps else batch + 1
