"""`MetricSender`: a daemon thread that batches metric points off the training thread."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Protocol

from tracking.mlflow.retry import RetryPolicy, is_permanent

# (key, value, step, timestamp in ms): a plain tuple is the cheapest thing to build on the
# training thread; backend objects are made on the sender thread.
MetricPoint = tuple[str, float, int, int]

MAX_METRICS_PER_BATCH = 1000  # MLflow refuses log_batch requests with more metrics


class Journal(Protocol):
    """Where points wait on disk until the backend has them (`MetricJournal`)."""

    def append(self, points: list[MetricPoint]) -> None: ...

    def sync(self) -> None: ...

    def delivered(self, count: int) -> None: ...


class _Barrier:
    """A flush request, released once every point queued before it is sent or given up on
    (`send`), or only journaled and synced (not `send`)."""

    __slots__ = ("done", "problems", "send")

    def __init__(self, *, send: bool = True) -> None:
        self.done = threading.Event()
        self.problems: list[str] = []
        self.send = send


class MetricSender:
    """Sends queued metric points in batches from a daemon thread.

    `put` only appends to a deque (atomic under the GIL, so no lock on the hot path). The
    thread wakes every `interval_s`, when a full batch is queued, or on `flush`/`stop`, so it
    does not compete with training for the GIL on every step. Points that cannot be sent
    stay pending and are retried at the next flush; `stop` hands back whatever never got through.
    With a `journal`, every point is appended to it before it is sent, the journal is synced at
    each flush, and what the backend took (or refused for good) is marked delivered. A journal
    that cannot be written (a full disk) is reported once and dropped: sending goes on, and a
    `sync` then sends instead, so a checkpoint still never gets ahead of the metrics.
    """

    def __init__(
        self,
        send: Callable[[list[MetricPoint]], None],
        *,
        interval_s: float,
        retry: RetryPolicy,
        journal: Journal | None = None,
        name: str = "metric-sender",
    ) -> None:
        self._send = send
        self._journal = journal
        self._interval_s = interval_s
        self._retry = retry
        self._queue: deque[MetricPoint | _Barrier] = deque()
        self._wake = threading.Event()
        self._stopping = False
        # Owned by the sender thread until it has stopped.
        self._pending: list[MetricPoint] = []
        self._unreported: list[str] = []
        self._failing = False
        self._attempt_once = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def failing(self) -> bool:
        """Whether the last attempt to send failed (the backend looks unreachable)."""
        return self._failing

    def put(self, points: list[MetricPoint]) -> None:
        """Queue points for sending; cheap enough to call on every training step."""
        queue = self._queue
        queue.extend(points)
        if len(queue) >= MAX_METRICS_PER_BATCH and not self._wake.is_set():
            self._wake.set()

    def send_soon(self) -> None:
        """Wake the thread to send what is queued now (one attempt even if failing); no wait."""
        self._attempt_once = True
        self._wake.set()

    def flush(self) -> list[str]:
        """Block until every point queued so far is sent or has failed; return the problems."""
        return self._wait_for(_Barrier(send=True))

    def sync(self) -> list[str]:
        """Block until every point queued so far is in the journal, on disk; sends nothing."""
        return self._wait_for(_Barrier(send=False))

    def _wait_for(self, barrier: _Barrier) -> list[str]:
        self._queue.append(barrier)
        self._wake.set()
        # Polling the thread guards against waiting forever on a sender that died.
        while not barrier.done.wait(timeout=1.0):
            if not self._thread.is_alive():
                return ["the metric sender thread has stopped; queued metrics were not sent"]
        return barrier.problems

    def stop(self) -> tuple[list[MetricPoint], list[str]]:
        """Send what is queued, stop the thread; return the points not delivered (and still
        worth sending) and the problems."""
        problems = self.flush()
        self._stopping = True
        self._wake.set()
        self._thread.join()
        leftover = [item for item in self._queue if isinstance(item, tuple)]
        return self._pending + leftover, problems  # (the refused are reported, not retried)

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._interval_s)
            # Clear before draining: a point queued after this is picked up by this drain or
            # wakes the next one, so no wake-up is lost.
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        queue = self._queue
        taken: list[MetricPoint] = []
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                break
            if type(item) is tuple:
                taken.append(item)
                continue
            assert isinstance(item, _Barrier)
            self._take(taken)
            taken = []
            self._journaled(lambda journal: journal.sync())
            if item.send or self._journal is None:
                self._send_pending(item.problems, force=True)
                item.problems.extend(self._unreported)
                self._unreported.clear()
            item.done.set()
        self._take(taken)
        # A timed wake-up does not retry a backend that is already failing; the next
        # flush does, so a dead server costs one retry cycle per flush, not per second.
        # An epoch-end `send_soon` does try once more, so a store that was briefly locked
        # gets the backlog at the next epoch instead of only at the end of training.
        attempt, self._attempt_once = self._attempt_once, False
        if attempt:
            self._journaled(lambda journal: journal.sync())  # the epoch-end flush, no wait
        if self._pending and (attempt or not self._failing):
            self._send_pending(self._unreported, force=False)

    def _take(self, points: list[MetricPoint]) -> None:
        """Points from the queue: journaled, then pending."""
        if points:
            self._journaled(lambda journal: journal.append(points))
            self._pending.extend(points)

    def _mark_delivered(self, count: int) -> None:
        self._journaled(lambda journal: journal.delivered(count))

    def _journaled(self, write: Callable[[Journal], None]) -> None:
        """`write` to the journal; one that fails is reported and dropped (see the class)."""
        if self._journal is None:
            return
        try:
            write(self._journal)
        except OSError as error:
            self._journal = None
            self._unreported.append(
                f"the metrics journal cannot be written ({error.strerror or error}): metrics "
                "go to MLflow unjournaled, and a kill now may lose those not yet sent"
            )

    def _send_pending(self, problems: list[str], *, force: bool) -> None:
        pending = self._pending
        while pending:
            chunk = pending[:MAX_METRICS_PER_BATCH]
            try:
                self._send_chunk(chunk, problems)
            except Exception as exc:
                self._failing = True
                if force:
                    problems.append(
                        f"sending metrics failed after {self._retry.max_retries} retries "
                        f"({exc!r}); "
                        f"{len(pending)} metric points are pending and will be retried at the "
                        "next flush"
                    )
                return
            del pending[: len(chunk)]
            self._mark_delivered(len(chunk))  # sent, or refused for good (reported)
        self._failing = False

    def _send_chunk(self, chunk: list[MetricPoint], problems: list[str]) -> None:
        try:
            self._send_with_retries(chunk)
            return
        except Exception as exc:
            if not is_permanent(exc):
                raise
            refusal = exc
        by_key: dict[str, list[MetricPoint]] = {}
        for point in chunk:
            by_key.setdefault(point[0], []).append(point)
        if len(by_key) == 1:
            self._reject(chunk, refusal, problems=problems)
            return
        # One bad key must not block the others: resend key by key, keep only the refused.
        for points in by_key.values():
            try:
                self._send_with_retries(points)
            except Exception as exc:
                if not is_permanent(exc):
                    raise
                self._reject(points, exc, problems=problems)

    def _reject(self, points: list[MetricPoint], exc: Exception, *, problems: list[str]) -> None:
        problems.append(
            f"the backend refused {len(points)} points of metric {points[0][0]!r} ({exc}); "
            "they are not sent again"
        )

    def _send_with_retries(self, points: list[MetricPoint]) -> None:
        self._retry(lambda: self._send(points))
