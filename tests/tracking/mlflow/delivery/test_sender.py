"""MetricSender batching, retry and refusal handling, driven by a plain Python `send`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tracking.mlflow.delivery.sender import MetricPoint, MetricSender
from tracking.mlflow.retry import RetryPolicy


class Refused(Exception):
    """Stands in for an MLflow refusal: same `error_code` attribute the sender reads."""

    error_code = "INVALID_PARAMETER_VALUE"


class Backend:
    """A `send` target that records batches and can be told to fail."""

    def __init__(self, *, fail_first: int = 0, refused_keys: frozenset[str] = frozenset()) -> None:
        self.batches: list[list[MetricPoint]] = []
        self.calls = 0
        self.fail_first = fail_first
        self.refused_keys = refused_keys
        self.lock = threading.Lock()

    def send(self, points: list[MetricPoint]) -> None:
        with self.lock:
            self.calls += 1
            if self.calls <= self.fail_first:
                raise ConnectionError("server down")
            if any(point[0] in self.refused_keys for point in points):
                raise Refused("bad key")
            self.batches.append(list(points))

    @property
    def received(self) -> list[MetricPoint]:
        return [point for batch in self.batches for point in batch]


def _points(n: int, key: str = "loss") -> list[MetricPoint]:
    return [(key, float(step), step, 1000 + step) for step in range(n)]


def _sender(backend: Backend, *, interval_s: float = 60.0) -> MetricSender:
    return MetricSender(
        backend.send, interval_s=interval_s, retry=RetryPolicy(max_retries=1, backoff_s=0.0)
    )


def test_points_wait_for_flush_and_arrive_in_order() -> None:
    backend = Backend()
    sender = _sender(backend)
    for point in _points(50):
        sender.put([point])
    time.sleep(0.05)
    assert backend.calls == 0  # below a full batch, nothing is sent before the interval
    assert sender.flush() == []
    assert backend.received == _points(50)
    assert sender.stop() == ([], [])


def test_batches_hold_at_most_1000_points() -> None:
    backend = Backend()
    sender = _sender(backend)
    sender.put(_points(2500))
    sender.flush()
    assert [len(batch) for batch in backend.batches] == [1000, 1000, 500]
    assert backend.received == _points(2500)
    sender.stop()


def test_a_full_batch_is_sent_without_waiting_for_flush() -> None:
    backend = Backend()
    sender = _sender(backend)
    sender.put(_points(1000))
    deadline = time.monotonic() + 5
    while not backend.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(backend.received) == 1000
    sender.stop()


def test_failed_points_stay_pending_until_a_later_flush_succeeds() -> None:
    backend = Backend(fail_first=2)  # one flush: first attempt plus one retry, both fail
    sender = _sender(backend)
    sender.put(_points(10))
    problems = sender.flush()
    assert len(problems) == 1
    assert "10 metric points are pending and will be retried" in problems[0]
    assert sender.failing
    sender.put(_points(5, key="acc"))
    assert sender.flush() == []
    assert backend.received == _points(10) + _points(5, key="acc")
    assert sender.stop() == ([], [])


def test_refused_key_is_set_aside_and_the_rest_delivered() -> None:
    backend = Backend(refused_keys=frozenset({"bad"}))
    sender = _sender(backend)
    sender.put(_points(3) + _points(2, key="bad") + _points(3, key="acc"))
    problems = sender.flush()
    assert len(problems) == 1
    assert "refused 2 points of metric 'bad'" in problems[0]
    assert sorted(backend.received) == sorted(_points(3) + _points(3, key="acc"))
    unsent, _ = sender.stop()
    assert unsent == []  # refused for good (and said so): not worth sending again


def test_stop_returns_points_that_never_got_through() -> None:
    backend = Backend(fail_first=10**6)
    sender = _sender(backend)
    sender.put(_points(7))
    unsent, problems = sender.stop()
    assert unsent == _points(7)
    assert "7 metric points are pending" in problems[0]


class RecordingJournal:
    """What the sender tells its journal, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def append(self, points: list[MetricPoint]) -> None:
        self.events.append(("append", len(points)))

    def sync(self) -> None:
        self.events.append(("sync", None))

    def delivered(self, count: int) -> None:
        self.events.append(("delivered", count))


def test_points_are_journaled_before_they_are_sent_and_marked_after() -> None:
    backend, journal = Backend(fail_first=2), RecordingJournal()
    sender = MetricSender(
        backend.send,
        interval_s=60,
        retry=RetryPolicy(max_retries=0, backoff_s=0.0),
        journal=journal,
    )
    sender.put(_points(5))
    assert sender.sync() == []  # journaled and on disk before any send is tried
    assert journal.events[:2] == [("append", 5), ("sync", None)]
    problems = sender.flush()  # the sends fail: still pending, not marked
    assert "5 metric points are pending" in problems[0]
    assert ("delivered", 5) not in journal.events
    sender.flush()
    assert backend.received == _points(5)
    assert journal.events[-1] == ("delivered", 5)
    sender.stop()


def test_a_journal_on_a_full_disk_is_reported_once_and_sending_goes_on(tmp_path: Path) -> None:
    from tests.mounts import fill, small_tmpfs
    from tracking.mlflow.delivery.journal import MetricJournal

    backend = Backend()
    with small_tmpfs(tmp_path / "disk", 64) as disk:
        journal = MetricJournal(disk / "run.journal", run_id="r", tracking_uri="sqlite://")
        sender = MetricSender(
            backend.send,
            interval_s=60.0,
            retry=RetryPolicy(max_retries=1, backoff_s=0.0),
            journal=journal,
        )
        sender.put(_points(10))
        assert sender.sync() == []  # journaled (and sent)
        fill(disk)
        sender.put(_points(3000, "big"))  # more than the journal's buffer: the write fails
        problems = sender.sync()  # (a checkpoint's wait) sends instead, the journal gone
        assert len(problems) == 1 and problems[0].startswith(
            "the metrics journal cannot be written (No space left on device)"
        )
        assert backend.received == _points(10) + _points(3000, "big")
        sender.put(_points(5, "after"))
        assert sender.flush() == []  # reported once; sending goes on
        assert backend.received[-5:] == _points(5, "after")
        sender.stop()
        journal.close()  # on the full disk: no error
