"""Metric batches written in the sender thread, then by a child process once worth it: nothing
lost when that process dies."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tracking.mlflow.delivery.process import MAX_FAILED_STARTS, MetricProcess
from tracking.mlflow.retry import is_permanent


def _ready(process: MetricProcess, timeout_s: float = 60) -> MetricProcess:
    deadline = time.monotonic() + timeout_s
    while not process.ready_now():
        assert time.monotonic() < deadline, "the writer process never said it was ready"
        time.sleep(0.05)
    return process


def test_a_short_run_writes_in_thread_and_starts_no_process(
    start_mlflow_sink: Any, mlflow_uri: str
) -> None:
    sink = start_mlflow_sink()
    for step in range(50):
        sink.log_metrics({"a": float(step), "b": 1.0}, step=step)
    sink.flush()
    assert sink.metric_writer.pid is None  # well under the CPU it takes to start one
    sink.close()
    history = MlflowClient(mlflow_uri).get_metric_history(sink.run_id, "a")
    assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(50)]


def test_a_run_past_the_cpu_budget_hands_its_batches_to_the_process(
    start_mlflow_sink: Any, mlflow_uri: str
) -> None:
    sink = start_mlflow_sink(subprocess_after_cpu_s=0.001)
    process = sink.metric_writer
    step = 0
    while process.pid is None:  # the in-thread batches use up the budget
        sink.log_metrics({"a": float(step)}, step=step)
        sink.flush()
        step += 1
        assert step < 1000, "the writer process was never started"
    _ready(process)
    for _ in range(3):
        sink.log_metrics({"a": float(step)}, step=step)
        sink.flush()
        step += 1
    assert process.batches_sent >= 3
    assert (
        os.getpriority(os.PRIO_PROCESS, process.pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10
    )  # training comes first
    sink.close()
    history = MlflowClient(mlflow_uri).get_metric_history(sink.run_id, "a")
    assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(step)]


def test_a_process_that_never_gets_ready_is_given_up_and_nothing_lost(
    start_mlflow_sink: Any, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # every child dies at once
    sink = start_mlflow_sink(subprocess_after_cpu_s=0)
    process = sink.metric_writer
    for step in range(MAX_FAILED_STARTS + 3):
        sink.log_metrics({"a": float(step)}, step=step)
        sink.flush()
        deadline = time.monotonic() + 10
        while process.running:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert process.failed_starts == MAX_FAILED_STARTS
    sink.close()
    history = MlflowClient(mlflow_uri).get_metric_history(sink.run_id, "a")
    assert [m.step for m in history] == list(range(MAX_FAILED_STARTS + 3))


def test_metrics_survive_a_killed_writer_process(start_mlflow_sink: Any, mlflow_uri: str):
    sink = start_mlflow_sink(retry_backoff_s=0.05, subprocess_after_cpu_s=0)
    sink.log_metrics({"a": 1.0}, step=1)
    sink.flush()
    writer = _ready(sink.metric_writer)
    os.kill(writer.pid, signal.SIGKILL)
    while writer.running:
        time.sleep(0.01)
    sink.log_metrics({"a": 2.0, "b": 3.0}, step=2)
    sink.flush()
    sink.close()
    client = MlflowClient(mlflow_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(sink.run_id, "a")] == [
        (1, 1.0),
        (2, 2.0),
    ]
    assert [m.value for m in client.get_metric_history(sink.run_id, "b")] == [3.0]
    assert sink.metric_writer.pid is None  # the replacement child was stopped at close


@pytest.mark.timeout(120)
def test_a_writer_that_never_hears_back_is_killed_and_the_batch_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts connections but never answers must not block flush() forever."""
    silent = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    # MLflow's own HTTP timeout would end this too; make sure ours is what acts.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "600")
    uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
    writer = MetricProcess(uri, "0" * 32, reply_timeout_s=2)
    with pytest.raises(TimeoutError, match="did not write a batch within 2 s"):
        writer.send([("loss", 1.0, 1, 1000)])
    assert writer.pid is None  # the stuck child was killed
    assert is_permanent(TimeoutError()) is False  # so MetricSender retries it in a new child
    writer.close()
    silent.close()


@pytest.mark.parametrize(("points", "started"), [(100, False), (100_000, True)])
def test_a_run_that_will_log_a_lot_starts_the_process_at_once(
    start_mlflow_sink: Any, points: int, started: bool
) -> None:
    sink = start_mlflow_sink(expected_metric_points=points)
    assert (sink.metric_writer.pid is not None) is started  # before any batch
    sink.close()
