"""A child process that writes metric batches to MLflow.

MLflow's client spends Python time on every metric point (ORM objects, SQL), and a background
thread doing that holds the training process's GIL: at every-step logging it slows a small
model's steps (docs/benchmarks.md). In a child process that work runs on another core. The
parent's side is one pickle per batch over a pipe.

The protocol is pickled objects over the child's stdin/stdout: the child says "ready" once
its MLflow client exists; then the parent sends a list of metric points (or None to stop), the
child answers None on success or `(kind, name, message)` when MLflow refused or failed, which
the parent re-raises as the same kind of exception so the sender's retry rules apply unchanged.

Every wait for the child is bounded: a child stuck on a locked store or on a server that
accepts but never answers is killed after `reply_timeout_s`, and the batch is retried (in a
new child) like any transient failure.
"""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import threading
from typing import IO, Any

from tracking.mlflow.delivery.sender import MetricPoint

_READY = "ready"
MAX_FAILED_STARTS = 3


class MetricProcess:
    """Sends metric batches to a lazily started child process that calls `log_batch`.

    Args:
        tracking_uri, run_id: where the child logs.
        reply_timeout_s: how long one batch may take before the child is killed.
        startup_timeout_s: how long the child may take to import MLflow and get ready.
    """

    def __init__(
        self,
        tracking_uri: str,
        run_id: str,
        *,
        reply_timeout_s: float = 120.0,
        startup_timeout_s: float = 120.0,
    ) -> None:
        if reply_timeout_s <= 0:
            raise ValueError(
                f"`reply_timeout_s` must be > 0. Received: reply_timeout_s={reply_timeout_s}"
            )
        self._tracking_uri = tracking_uri
        self._run_id = run_id
        self._reply_timeout_s = reply_timeout_s
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._failed_starts = 0
        self._lock = threading.Lock()
        self.batches_sent = 0

    @property
    def pid(self) -> int | None:
        """The child's process id; None when no child was started (or it was stopped)."""
        proc = self._proc
        return None if proc is None else proc.pid

    @property
    def running(self) -> bool:
        """Whether a child was started and has not ended."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def failed_starts(self) -> int:
        """Children that died before they said they were ready."""
        return self._failed_starts

    def start(self) -> None:
        """Start a child unless one runs; returns at once (`ready_now` says when it is ready).

        After `MAX_FAILED_STARTS` children died before they were ready, it starts no more:
        the caller writes in-thread instead of paying for a start that keeps failing.
        """
        with self._lock:
            proc = self._proc
            if proc is not None and not self._ready and proc.poll() is not None:
                self._failed_starts += 1  # it died before it was ready
                self._proc = None
            if self._failed_starts < MAX_FAILED_STARTS:
                self._ensure_started()

    def ready_now(self) -> bool:
        """Whether a child runs and has said it is ready; never waits."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return False
            if self._ready:
                return proc.poll() is None  # if it died, `start` makes a new one
            assert proc.stdout is not None
            if proc.poll() is None and not select.select([proc.stdout], [], [], 0)[0]:
                return False  # still importing MLflow
            # It answered, or died (EOF): a start that failed.
            try:
                self._ready = pickle.load(proc.stdout) == _READY
            except (OSError, EOFError, pickle.UnpicklingError):
                self._ready = False
            if not self._ready:
                self._failed_starts += 1
                self._terminate()
            return self._ready

    def send(self, points: list[MetricPoint]) -> None:
        """Log `points` to the run; raises like `MlflowClient.log_batch` would."""
        with self._lock:
            proc = self._ensure_started()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                if not self._ready:
                    if self._receive(proc, self._startup_timeout_s, "get ready") != _READY:
                        raise EOFError("the writer process did not say it was ready")
                    self._ready = True
                pickle.dump(points, proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
                reply = self._receive(proc, self._reply_timeout_s, "write a batch")
                self.batches_sent += 1
            except TimeoutError:
                self._terminate()
                raise  # transient: the sender retries, and the next attempt starts a new child
            except (OSError, EOFError, pickle.UnpicklingError) as exc:
                self._terminate()
                raise ConnectionError(f"the MLflow metric writer process died ({exc!r})") from exc
        if reply is not None:
            raise _rebuild(reply)

    @staticmethod
    def _receive(proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> Any:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            raise TimeoutError(
                f"the MLflow metric writer process did not {what} within {timeout_s:g} s "
                "(a locked store or a server that does not answer); it was stopped and the "
                "batch will be retried"
            )
        return pickle.load(proc.stdout)

    def close(self) -> None:
        """Stop the child after the batches already sent."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            try:
                assert proc.stdin is not None
                pickle.dump(None, proc.stdin)
                proc.stdin.close()
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._ready = False
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tracking.mlflow.delivery.process",
                    self._tracking_uri,
                    self._run_id,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # Its own session: Ctrl-C in the terminal reaches the parent, which then closes
                # the child in order, instead of killing it mid-batch with a traceback.
                start_new_session=True,
            )
        return self._proc

    def _terminate(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def _rebuild(reply: tuple[str, str, str]) -> Exception:
    """The child's error as the exception the in-process client would have raised."""
    kind, name, message = reply
    if kind == "mlflow":
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import ErrorCode

        return MlflowException(message, error_code=ErrorCode.Value(name))
    if kind == "value":
        return ValueError(f"{name}: {message}")
    return RuntimeError(f"MLflow metric writer: {message}")


def _serve(tracking_uri: str, run_id: str, requests: IO[bytes], replies: IO[bytes]) -> None:
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    from tracking.mlflow.mlflow_internals import bulk_log_metrics
    from tracking.mlflow.store import open_client

    client = open_client(tracking_uri)
    pickle.dump(_READY, replies)
    replies.flush()
    while True:
        try:
            points = pickle.load(requests)
        except EOFError:  # the parent is gone
            return
        if points is None:
            return
        reply: Any = None
        try:
            if not bulk_log_metrics(client, run_id, points):
                metrics = [Metric(key, value, ts, step) for key, value, step, ts in points]
                client.log_batch(run_id, metrics=metrics, synchronous=True)
        except MlflowException as exc:
            reply = ("mlflow", exc.error_code, exc.message)
        except (ValueError, TypeError) as exc:
            reply = ("value", type(exc).__name__, str(exc))
        except Exception as exc:
            reply = ("other", type(exc).__name__, repr(exc))
        pickle.dump(reply, replies)
        replies.flush()


if __name__ == "__main__":
    # Training comes first: at a low priority the writer uses the cycles training leaves idle
    # and catches up at the flushes, which wait for it.
    os.nice(10)
    # Keep the reply channel clean: anything printed (warnings, logging) goes to stderr.
    reply_channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        _serve(sys.argv[1], sys.argv[2], sys.stdin.buffer, reply_channel)
    except (BrokenPipeError, ConnectionResetError, pickle.UnpicklingError):
        pass  # the parent is gone (killed): nobody reads a reply
