"""Metric batches written by a child process: nothing lost when that process dies."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tracking._metric_process import MetricProcess
from tracking._retry import is_permanent


def test_metrics_survive_a_killed_writer_process(start_mlflow_sink: Any, mlflow_store: str):
    sink = start_mlflow_sink(retry_backoff_s=0.05)
    sink.log_metrics({"a": 1.0}, step=1)
    sink.flush()
    writer = sink._metric_process._proc
    writer.kill()
    writer.wait()
    sink.log_metrics({"a": 2.0, "b": 3.0}, step=2)
    sink.flush()
    sink.close()
    client = MlflowClient(mlflow_store)
    assert [(m.step, m.value) for m in client.get_metric_history(sink.run_id, "a")] == [
        (1, 1.0),
        (2, 2.0),
    ]
    assert [m.value for m in client.get_metric_history(sink.run_id, "b")] == [3.0]
    assert sink._metric_process._proc is None  # the replacement child was stopped at close


def test_the_writer_process_runs_at_low_priority(start_mlflow_sink: Any) -> None:
    import os

    sink = start_mlflow_sink()
    sink.log_metrics({"a": 1.0}, step=1)
    sink.flush()
    pid = sink._metric_process._proc.pid
    assert os.getpriority(os.PRIO_PROCESS, pid) >= os.getpriority(os.PRIO_PROCESS, 0) + 10
    sink.close()


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
    assert writer._proc is None  # the stuck child was killed
    assert is_permanent(TimeoutError()) is False  # so MetricSender retries it in a new child
    writer.close()
    silent.close()
