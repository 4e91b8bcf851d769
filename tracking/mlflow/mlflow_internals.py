"""The few private MLflow pieces `tracking` reuses, kept in one place.

- The system-metrics monitor: MLflow's `SystemMetricsMonitor` samples the whole host; a run
  of a search samples its own share (`tracking.mlflow.system_metrics`), so its list of
  monitors is replaced, its samples are kept in each monitor's private `_metrics`, and the
  last, partial interval is published by hand (MLflow's `finish` drops it).
- A data set as the run input MLflow's own `mlflow.log_input` would make
  (`Dataset._to_mlflow_entity`, `DatasetSource._get_source_type`), logged through
  `MlflowClient.log_inputs` with an explicit run id instead of the fluent active run.
- Writing a batch of metric points into a SQL store in one statement (`bulk_log_metrics`):
  the store's session maker, run checks, value rules and latest-metric update, with
  MLflow's `metrics` table model.
- The Keras flavor's loader, `mlflow.keras.load._load_keras_model`, which keras-harness's
  MLflow plugin wraps so a logged model's recorded user code is imported when it loads.

MLflow is pinned to a major version in `pyproject.toml`; if these move, only this module
changes, and `tests/tracking/mlflow/test_mlflow_internals.py` names what broke.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor

__all__ = [
    "BaseMetricsMonitor",
    "add_sample",
    "bulk_log_metrics",
    "dataset_entity",
    "finish_system_monitor",
    "samples",
    "source_type",
    "start_system_monitor",
    "wrap_keras_model_loader",
]


def start_system_monitor(
    run_id: str,
    *,
    every_s: float,
    tracking_uri: str,
    monitors: Sequence[BaseMetricsMonitor] | None = None,
) -> Any:
    """MLflow's system-metrics monitor for `run_id`, started; with `monitors`, those
    sample instead of MLflow's own (the whole host's CPU, memory, disk, network, GPUs).

    A first sample is published at once (step 0), so even a short run's charts have its start
    and its end (`finish_system_monitor`), not a single bar; values are rounded to 4
    significant digits (MLflow's own would show 0.0012440000000424334).
    """
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=every_s, tracking_uri=tracking_uri)
    if monitors is not None:
        monitor.monitors = list(monitors)
    aggregate = monitor.aggregate_metrics
    monitor.aggregate_metrics = lambda: {k: _rounded(v) for k, v in aggregate().items()}
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.start()
    return monitor


def _rounded(value: float) -> float:
    return float(f"{value:.4g}")


def finish_system_monitor(monitor: Any) -> None:
    """Stop `monitor` and publish its last, partial interval too (a run shorter than the
    sampling interval would otherwise have no system metrics at all)."""
    monitor.finish()
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()


def add_sample(monitor: BaseMetricsMonitor, name: str, value: float) -> None:
    """Record one sample of metric `name` in a monitor of ours (aggregated at publishing)."""
    monitor._metrics[name].append(value)


def samples(monitor: BaseMetricsMonitor) -> dict[str, list[float]]:
    """The samples a monitor holds since it last published, by metric name."""
    return {name: list(values) for name, values in monitor._metrics.items()}


def wrap_keras_model_loader(
    module: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace the Keras flavor's loader in `mlflow.keras.load` (`module`) by `wrap(loader)`,
    once: a loader that `wrap` returned before carries `_harness` and is left as it is."""
    original = module._load_keras_model
    if getattr(original, "_harness", False):
        return
    wrapped = wrap(original)
    wrapped._harness = True  # type: ignore[attr-defined]
    module._load_keras_model = wrapped


def dataset_entity(dataset: Any) -> Any:
    """The `mlflow.entities.Dataset` of an `mlflow.data` data set (name, digest, source,
    schema, profile), as `mlflow.log_input` logs it."""
    return dataset._to_mlflow_entity()


def source_type(source: Any) -> str:
    """The type name a data set's source is recorded under (`code`, `local`, ...)."""
    return str(source._get_source_type())


_VALID_NAMES: set[str] = set()  # metric names MLflow's rules accepted (checked once each)


def bulk_log_metrics(
    client: Any, run_id: str, points: Sequence[tuple[str, float, int, int]]
) -> bool:
    """Insert `points` (key, value, step, timestamp in ms) into the run's metrics as
    `log_batch` would, in one statement; False (nothing written) when that cannot be done
    here: not a SQL store, a point already stored (which `log_batch` skips), an MLflow whose
    store moved on. The caller then calls `log_batch`.

    `log_batch` on a SQL store builds and flushes an ORM object per point (about 120 µs of
    CPU each); this inserts the same rows (MLflow's `metrics` table model, its NaN and
    infinity rules) by one executemany and updates the run's latest values with MLflow's
    own code, one point per key: a few µs per point."""
    try:
        import sqlalchemy
        from mlflow.store.tracking.dbmodels.models import SqlMetric
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
        from mlflow.utils.validation import _validate_metric_name

        store = client._tracking_client.store
    except (ImportError, AttributeError):
        return False
    if not isinstance(store, SqlAlchemyStore) or not points:
        return False
    rows, seen = [], set()
    latest: dict[str, tuple[int, int, float, bool]] = {}
    for key, value, step, timestamp in points:
        if (key, value, step, timestamp) in seen:
            continue  # log_batch drops repeats within a batch
        seen.add((key, value, step, timestamp))
        if key not in _VALID_NAMES:
            _validate_metric_name(key)  # raises as log_batch would
            _VALID_NAMES.add(key)
        is_nan, stored = store.sanitize_metric_value(float(value))
        rows.append(
            {
                "run_uuid": run_id,
                "key": key,
                "value": stored,
                "timestamp": int(timestamp),
                "step": int(step),
                "is_nan": is_nan,
            }
        )
        point = (int(step), int(timestamp), stored, is_nan)
        if key not in latest or point[:3] > latest[key][:3]:
            latest[key] = point
    newest = [
        SqlMetric(run_uuid=run_id, key=key, value=v, timestamp=ts, step=step, is_nan=nan)
        for key, (step, ts, v, nan) in latest.items()
    ]
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            store._check_run_is_active(store._get_run(run_uuid=run_id, session=session))
            try:
                session.execute(sqlalchemy.insert(SqlMetric), rows)
            except sqlalchemy.exc.IntegrityError:
                session.rollback()  # a point already stored: log_batch knows which to skip
                return False
            store._update_latest_metrics_if_necessary(newest, session)
    except (AttributeError, TypeError):  # an MLflow whose store moved on: the public way
        return False
    return True
