"""Stopping is a flag, not an exception mid-step.

SIGTERM and Ctrl-C set a flag that the training loop checks between compiled calls (like
Keras's `stop_training`), so whatever runs at shutdown — callbacks, sinks, a checkpoint — sees
the weights, the data position and the callbacks at the same step. The loop then raises
`TrainingInterrupted`, a `KeyboardInterrupt`, so the run still ends KILLED.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a step boundary because a stop was requested (signal or call)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NonFiniteGradients(RuntimeError):
    """Training halted: an update's gradients were NaN or infinite (`on_nan: raise`)."""


class StopSignal:
    """A request to stop training at the next step boundary; safe to set from any thread.

    Example:
        >>> stop = StopSignal()
        >>> with stop_on_signals(stop):
        ...     train(model, data, stop=stop)
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._reason = ""

    def request(self, reason: str = "stop requested") -> None:
        """Ask the loop to stop after the compiled call in progress (the first reason wins)."""
        if not self._event.is_set():
            self._reason = reason
            self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str:
        return self._reason

    def clear(self) -> None:
        """Forget a request, e.g. before continuing a loop that was stopped."""
        self._event.clear()
        self._reason = ""


_NAMES: dict[int, str] = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}


@contextmanager
def stop_on_signals(
    stop: StopSignal, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
) -> Iterator[StopSignal]:
    """Within the block, the first SIGINT/SIGTERM requests a stop instead of raising.

    A second signal raises `KeyboardInterrupt` at once (the way out of a step that hangs). If a
    stop was requested but nothing acted on it by the end of the block (the signal came after
    training, while the model was being saved), `TrainingInterrupted` is raised on exit, so
    the run still ends KILLED. Outside the main thread, signals are left alone.
    """

    def handler(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt(f"second {_NAMES.get(signum, signum)}: stopping at once")
        stop.request(f"{_NAMES.get(signum, f'signal {signum}')} received")

    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    if stop.requested:
        raise TrainingInterrupted(stop.reason)
