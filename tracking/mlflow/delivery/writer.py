"""`MetricWriter`: writes a run's metric batches in the sender thread, then in a child process
once MLflow's work there is worth moving off the training process.

The child (`MetricProcess`) keeps MLflow's Python work per metric point away from the training
thread's GIL, which matters at every-step logging. But starting it costs seconds of CPU (a
fresh interpreter importing MLflow and opening the store), while a short run logs a few
hundred points, far less MLflow work: for a search's small trials, several side by side on a
few cores, the child would cost more than it saves. So batches are written in
the sender thread until MLflow's work there has cost `child_after_cpu_s` of CPU; then the child
is started and takes over as soon as it says it is ready. Batches keep going in-thread while it
starts, so nothing waits for its import. A caller that knows a run will log a lot (from its
plan: steps, logging interval) says so with `expected_points`, and the child starts at once.
"""

from __future__ import annotations

import time

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from tracking.mlflow.delivery.process import MetricProcess
from tracking.mlflow.delivery.sender import MetricPoint
from tracking.mlflow.mlflow_internals import bulk_log_metrics

# The work per metric point on a sqlite store, in CPU-seconds, written in one statement
# (`bulk_log_metrics`; `log_batch` takes about 120 µs): how a run's expected points become
# expected CPU.
CPU_PER_POINT_S = 15e-6


class MetricWriter:
    """Writes metric batches for one run; called from one thread (the sender's) at a time.

    Args:
        client, run_id: the run.
        in_subprocess: whether to hand the batches to a child process once worth it; False
            writes every batch in-thread.
        child_after_cpu_s: the in-thread CPU time after which the child takes over (>= 0,
            checked by `MlflowSink`); 0 starts it at once (its import then overlaps the first
            step's tracing).
        expected_points: about how many points the run will log, if known: when writing
            them would cost more than `child_after_cpu_s`, the child starts at once.
        reply_timeout_s: how long the child may take for one batch before it is killed.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        in_subprocess: bool = True,
        child_after_cpu_s: float,
        expected_points: int | None = None,
        reply_timeout_s: float = 120.0,
    ) -> None:
        self._client = client
        self._run_id = run_id
        self._child_after_cpu_s = child_after_cpu_s
        self._in_thread_cpu_s = 0.0
        self.process = (
            MetricProcess(str(client.tracking_uri), run_id, reply_timeout_s=reply_timeout_s)
            if in_subprocess
            else None
        )
        expected_cpu_s = (expected_points or 0) * CPU_PER_POINT_S
        self._child_wanted = expected_cpu_s >= child_after_cpu_s
        if self.process is not None and self._child_wanted:
            self.process.start()

    def send(self, points: list[MetricPoint]) -> None:
        """Log `points` to the run; raises like `MlflowClient.log_batch` would."""
        process = self.process
        self._child_wanted = self._child_wanted or self._in_thread_cpu_s >= self._child_after_cpu_s
        if process is not None and self._child_wanted:
            process.start()  # returns at once; a no-op while a child runs, a new one if it died
            if process.ready_now():
                process.send(points)
                return
        started = time.thread_time()
        try:
            if not bulk_log_metrics(self._client, self._run_id, points):
                metrics = [Metric(key, value, ts, step) for key, value, step, ts in points]
                self._client.log_batch(self._run_id, metrics=metrics, synchronous=True)
        finally:
            self._in_thread_cpu_s += time.thread_time() - started

    def close(self) -> None:
        """Stop the child, if one was started, after the batches already sent."""
        if self.process is not None:
            self.process.close()
