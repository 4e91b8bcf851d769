"""What a compiled train call returns besides Keras's `logs`, read inside the call."""

from __future__ import annotations

from typing import Any, NamedTuple


class StepOutputs(NamedTuple):
    """The optimizer's side of one compiled train call, as tensors of that call.

    Read inside the call, so the training thread never waits for them; `StepEnd` (what our
    callbacks get) reads them when first used.

    Attributes:
        iterations: optimizer updates so far (`optimizer.iterations`): the global step.
        learning_rate: the rate the call's last update applied (schedules and loss-scale
            wrappers included).
        batch: the logs of the call's last batch alone (`logs` hold Keras's running means of
            the epoch); under accumulation, those of the update's micro-batches together.
        values: further per-step metrics of the gradient pipeline (`grad_norm`,
            `skipped_steps`, `loss_scale`).
        halted_at: the update whose gradients halted training (`on_nan`), 0 if none.
    """

    iterations: Any
    learning_rate: Any
    batch: Any
    values: dict[str, Any]
    halted_at: Any
