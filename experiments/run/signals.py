"""Signals while a run is closed: nothing interrupts closing it (training stops by flag)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived while the run was being closed; raised once it is closed."""


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while the block runs (closing a run), then act on them.

    A `docker stop` or a second Ctrl-C while metrics are being delivered and the status set
    must not leave the run RUNNING; the interruption is raised once the run is closed.
    """
    received: list[int] = []

    def remember(signum: int, frame: Any) -> None:
        received.append(signum)

    try:
        previous = {s: signal.signal(s, remember) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise Terminated() if received[0] == signal.SIGTERM else KeyboardInterrupt()
