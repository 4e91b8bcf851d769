"""`MlflowSink`: sends a run to MLflow through `MlflowClient` and an explicit run id."""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from tracking.dataset import DatasetRecord
from tracking.mlflow.delivery.journal import MetricJournal
from tracking.mlflow.delivery.process import MetricProcess
from tracking.mlflow.delivery.replay import logged_steps, open_journal
from tracking.mlflow.delivery.sender import MetricPoint, MetricSender
from tracking.mlflow.delivery.writer import MetricWriter
from tracking.mlflow.keras_model.log import log_keras_model
from tracking.mlflow.options import MlflowOptions
from tracking.mlflow.runs import MlflowRuns
from tracking.sink import RunStatus, Sink, check_status

_MAX_ERROR_TAG_LENGTH = 5000  # the full text goes to the error.txt artifact


class MlflowSink(Sink):
    """Logs one MLflow run; metrics are batched and sent from a background thread.

    Only `MlflowClient` calls with an explicit run id are used, never the fluent "active run",
    so several trials can log side by side in one process. Params, tags and artifacts are
    sent synchronously. Every metric point is journaled on local disk before it is sent
    (`MetricJournal`: beside the run's checkpoints, or in `journal_dir()`), so none is lost
    to a dead server or a killed process: points are retried at every flush, and what is still
    unsent at `close`, or when the process is killed, is delivered by the next `resume` of the
    run or the next harness command on the machine.

    How it delivers (retries, the metric writer process, ...) is an `MlflowOptions`, given as
    `options=` or as its keyword arguments to the constructor, `start` and `resume` alike.

    Example:
        sink = MlflowSink.start("sqlite:///mlflow.db", experiment="mnist", run_name="trial-3")
        sink.log_params({"lr": 1e-3})
        sink.log_metrics({"loss": 0.25}, step=1)
        sink.close()
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        options: MlflowOptions | None = None,
        journal: MetricJournal | None = None,
        **settings: Any,
    ) -> None:
        """Attach to the existing run `run_id` (e.g. to resume it).

        `journal`: the run's journal, its earlier points handled already (`resume` does);
        without one, the journal at `journal_path` is opened, and what an earlier attempt
        left in it that the run lacks is sent first.

        Raises:
            ValueError: an option out of range; TypeError: a setting that is no option.
        """
        self.options = options = MlflowOptions.of(options, settings)
        self._runs = MlflowRuns(str(client.tracking_uri), retry=options.retry, client=client)
        self._client = client
        self._run_id = run_id
        self._experiment_id: str | None = None
        self._closed = False
        self._params: dict[str, str] = {}
        self._logged: set[tuple[str, int]] = set()  # (key, step) the run held when resumed
        self._held_params: set[str] = set()  # the params it held
        self._latest: dict[str, MetricPoint] = {}  # each metric's last point, to link models
        self._system_monitor: Any = None
        if journal is None:
            journal = open_journal(self._runs, run_id, options.journal_path, logged=None)
        self._journal = journal
        self._writer = MetricWriter(
            client,
            run_id,
            in_subprocess=options.metrics_in_subprocess,
            child_after_cpu_s=options.subprocess_after_cpu_s,
            expected_points=options.expected_metric_points,
            reply_timeout_s=options.writer_timeout_s,
        )
        self._sender = MetricSender(
            self._writer.send,
            interval_s=options.send_interval_s,
            retry=options.retry,
            journal=journal,
            name=f"mlflow-metrics-{run_id[:8]}",
        )

    @classmethod
    def start(
        cls,
        tracking_uri: str,
        *,
        experiment: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        artifact_location: str | None = None,
        options: MlflowOptions | None = None,
        **settings: Any,
    ) -> MlflowSink:
        """Create a run in `experiment` (created if missing) and return a sink for it.

        `artifact_location` is used only when the experiment is created here.
        """
        options = MlflowOptions.of(options, settings)
        runs = MlflowRuns(tracking_uri, retry=options.retry)
        experiment_id = runs.experiment_id(experiment, artifact_location=artifact_location)
        run_id = runs.create_run(experiment_id, run_name=run_name, tags=tags)
        sink = cls(runs.client, run_id, options=options)
        sink._experiment_id = experiment_id
        return sink

    @classmethod
    def resume(
        cls,
        tracking_uri: str,
        run_id: str,
        *,
        options: MlflowOptions | None = None,
        **settings: Any,
    ) -> MlflowSink:
        """Continue the existing run `run_id`: RUNNING again, and each metric step logged once.

        Steps a resumed training recomputes that the run already holds are not sent again
        (recomputed exactly, they are the same values); steps it lacks (lost in flight when
        the process died) are. Params already logged are not sent again either. Logged
        models an export left PENDING when its process died are deleted: the resumed run
        exports its model again.

        Raises:
            RunNotFound: the store has no run `run_id`.
        """
        options = MlflowOptions.of(options, settings)
        runs = MlflowRuns(tracking_uri, retry=options.retry)
        run = runs.get_run(run_id)
        logged = logged_steps(runs, run_id, run.data.metrics)
        journal = open_journal(runs, run_id, options.journal_path, logged=logged)
        runs.discard_pending_models(run_id, str(run.info.experiment_id))
        runs.set_status(run_id, "RUNNING")
        sink = cls(runs.client, run_id, options=options, journal=journal)
        sink._experiment_id = str(run.info.experiment_id)
        sink._logged = logged
        sink._held_params = set(run.data.params)
        sink._params = dict(run.data.params)
        return sink

    @property
    def run_id(self) -> str:
        """The MLflow run this sink logs to."""
        return self._run_id

    @property
    def experiment_id(self) -> str:
        """The experiment holding the run (looked up once when attached to an existing run)."""
        if self._experiment_id is None:
            run = self._runs.get_run(self._run_id)
            self._experiment_id = str(run.info.experiment_id)
        return self._experiment_id

    @property
    def metric_writer(self) -> MetricProcess | None:
        """The child process that writes metric batches once that is worth it (its `pid` is
        None until then); None with `metrics_in_subprocess=False`."""
        return self._writer.process

    @property
    def tracking_uri(self) -> str:
        """The tracking server or store URI of the client."""
        return str(self._client.tracking_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._check_open()
        params = {k: v for k, v in params.items() if str(k) not in self._held_params}
        self._params.update({str(key): str(value) for key, value in params.items()})
        self._runs.log_params(self._run_id, params)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        # Hot path (every training step): build plain tuples, hand them to the sender thread.
        if self._closed:
            self._check_open()
        timestamp = int(time.time() * 1000)
        points = [(key, float(value), step, timestamp) for key, value in metrics.items()]
        if self._logged:  # a resumed run: what it already holds is not logged twice
            points = [point for point in points if (point[0], step) not in self._logged]
        self._latest.update((point[0], point) for point in points)
        self._sender.put(points)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._check_open()
        self._runs.set_tags(self._run_id, tags)

    def log_artifact(
        self, local_path: str | os.PathLike[str], *, artifact_path: str | None = None
    ) -> None:
        self._check_open()
        self._runs.log_artifact(self._run_id, local_path, artifact_path=artifact_path)

    def log_model(
        self,
        model: Any,
        *,
        name: str = "model",
        input_example: Any | None = None,
        step: int = 0,
        metrics: Mapping[str, float] | None = None,
    ) -> str:
        """Log a `keras.Model` as an MLflow logged model `name`, the run's output at `step`.

        With `input_example`, the model's signature is inferred from it and recorded. The
        run's params, and the run's metrics last logged at `step` (or `metrics`, when given),
        are linked to the model. Load it with `mlflow.keras.load_model(f"models:/{model_id}")`
        or `runs:/<run_id>/<name>`. Returns the model id.
        """
        self._check_open()
        self.flush()  # the points to link are in the store first, so linking adds no copies
        if metrics is None:
            linked = [point for point in self._latest.values() if point[2] == step]
        else:
            linked = [self._point(key, float(value), step) for key, value in metrics.items()]
        model_id = log_keras_model(
            self._client,
            run_id=self._run_id,
            experiment_id=self.experiment_id,
            model=model,
            name=name,
            input_example=input_example,
            step=step,
            params=self._params,
            metrics=linked,
            retry=self._runs.retry,
        )
        # A resumed run exports again: the model from before the resume is superseded.
        self._runs.drop_superseded_models(
            self._run_id, self.experiment_id, name=name, keep=model_id
        )
        return model_id

    def _point(self, key: str, value: float, step: int) -> tuple[str, float, int, int]:
        """The logged `(key, value, step, timestamp)` point to link a model to; a new one
        only when the run has none, so linking adds no copies to the run's history."""
        latest = self._latest.get(key)
        if latest is not None and latest[1:3] == (value, step):
            return latest
        history = self._runs.metric_history(self._run_id, key)
        for metric in history:
            if metric.step == step and metric.value == value:
                return (key, value, step, metric.timestamp)
        return (key, value, step, int(time.time() * 1000))

    def log_dataset(self, dataset: DatasetRecord) -> None:
        """Record `dataset` as a run input (the UI's "Datasets" column)."""
        from tracking.mlflow.inputs import log_dataset

        self._check_open()
        log_dataset(self._runs, self._run_id, dataset)

    def monitor_system(self, every_s: float, *, scope: str = "host") -> None:
        """Sample CPU, memory, disk, network (and GPU) every `every_s` seconds until close.

        MLflow's own system-metrics monitor, attached to this run id and tracking URI; the
        values appear under "System metrics" (`system/...`), the last partial interval
        included. GPU values need `nvidia-ml-py`. MLflow's own
        `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`, when set, takes precedence over `every_s`.
        `scope="own"` samples only this process tree, its CPU cores and the GPUs in
        `CUDA_VISIBLE_DEVICES` (`tracking.mlflow.system_metrics`) instead of the whole host.
        """
        if scope not in ("host", "own"):
            raise ValueError(f"`scope` must be 'host' or 'own'. Received: scope={scope!r}")
        if every_s <= 0:
            raise ValueError(f"`every_s` must be > 0. Received: every_s={every_s}")
        self._check_open()
        if self._system_monitor is not None:
            return
        try:
            import psutil  # noqa: F401  (MLflow's monitor samples through it)
        except ImportError as exc:
            raise ImportError("system metrics need psutil: pip install psutil") from exc
        from tracking.mlflow.mlflow_internals import start_system_monitor
        from tracking.mlflow.system_metrics import own_monitors

        # Its start/stop INFO lines would land in the user's terminal on every run.
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
        self._system_monitor = start_system_monitor(
            self._run_id,
            every_s=every_s,
            tracking_uri=self.tracking_uri,
            monitors=own_monitors() if scope == "own" else None,
        )

    @property
    def journal(self) -> Path:
        """The file where this run's metric points wait until MLflow has them."""
        return self._journal.path

    def sync(self) -> None:
        """Block until every metric point logged so far is in the journal, on disk (whether
        or not MLflow has it yet): what a checkpoint waits for before it is put in place."""
        if not self._closed:
            _warn_all(self._sender.sync(), run_id=self._run_id)

    def flush(self, *, wait: bool = True) -> None:
        if self._closed:
            return
        if not wait:
            self._sender.send_soon()
            return
        _warn_all(self._sender.flush(), run_id=self._run_id)

    def close(self, status: RunStatus = "FINISHED", *, error: str | None = None) -> None:
        """Send everything, record `error`, and mark the run `status`; later calls do nothing."""
        check_status(status)
        if self._closed:
            return
        self._closed = True
        runs = self._runs
        try:
            if self._system_monitor is not None:
                _finish_system_metrics(self._system_monitor, run_id=self._run_id)
            unsent, problems = self._sender.stop()
            self._writer.close()
            _warn_all(problems, run_id=self._run_id)
            # A backend that just failed every retry is probably down: try the rest once each,
            # so closing against a dead server does not take several full retry cycles.
            if self._sender.failing:
                runs = runs.with_retry(runs.retry.once())
            self._journal.close()
            if unsent:
                warnings.warn(
                    f"MLflow run {self._run_id}: {len(unsent)} metric points could not be sent; "
                    f"they are kept in {self._journal.path} and delivered by the run's next "
                    "resume or the next harness command on this machine (or now: python -m "
                    f"tracking.mlflow.delivery.journal {self._journal.path})",
                    stacklevel=2,
                )
            if error is not None:
                self._record_error(error, runs)
        finally:
            # Whatever happened above (even a second Ctrl-C), the run must not stay RUNNING.
            self._terminate(status, runs)

    def _terminate(self, status: RunStatus, runs: MlflowRuns) -> None:
        try:
            runs.set_status(self._run_id, status)
        except Exception as exc:
            warnings.warn(
                f"MLflow run {self._run_id}: could not set its status to {status} ({exc!r}); "
                "it will show as RUNNING until updated, e.g. with "
                f"`MlflowClient({self.tracking_uri!r}).set_terminated({self._run_id!r}, "
                f"status={status!r})`.",
                stacklevel=2,
            )

    def _record_error(self, error: str, runs: MlflowRuns) -> None:
        tag = error[:_MAX_ERROR_TAG_LENGTH]  # the full text goes to the error.txt artifact
        try:
            runs.set_tags(self._run_id, {"error": tag})
            with tempfile.TemporaryDirectory(prefix="mlflow-error-") as tmp:
                path = Path(tmp) / "error.txt"
                path.write_text(error, encoding="utf-8")
                runs.log_artifact(self._run_id, path)
        except Exception as exc:
            warnings.warn(
                f"MLflow run {self._run_id}: could not record the run's error ({exc!r}). "
                f"The error was:\n{error}",
                stacklevel=3,
            )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"MlflowSink for run {self._run_id} is closed; attach a new "
                "`MlflowSink(client, run_id)` to log more to this run."
            )


def _finish_system_metrics(monitor: Any, *, run_id: str) -> None:
    """Stop the monitor, its last partial interval published; a failure only warns."""
    from tracking.mlflow.mlflow_internals import finish_system_monitor

    try:
        finish_system_monitor(monitor)
    except Exception as exc:
        warnings.warn(f"MLflow run {run_id}: last system metrics not sent ({exc!r})", stacklevel=3)


def _warn_all(problems: list[str], *, run_id: str) -> None:
    for problem in problems:
        warnings.warn(f"MLflow run {run_id}: {problem}", stacklevel=3)
