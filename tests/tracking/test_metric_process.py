"""Metric batches written by a child process: nothing lost when that process dies."""

from __future__ import annotations

from typing import Any

from mlflow.tracking import MlflowClient


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
