"""The contract of every private MLflow piece `tracking` uses (`mlflow_internals`), against a
real store: the system-metrics monitor with our own monitors, its last partial interval, the
Keras flavor's loader."""

from __future__ import annotations

import time
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tracking.mlflow import mlflow_internals
from tracking.mlflow.runs import MlflowRuns

pytestmark = pytest.mark.door("mlflow", "tracking/mlflow/mlflow_internals.py")


class _Constant(mlflow_internals.BaseMetricsMonitor):
    """A monitor of ours: one sample of 7.0 per collection."""

    def collect_metrics(self) -> None:
        mlflow_internals.add_sample(self, "constant_value", 7.0)

    def aggregate_metrics(self) -> dict[str, float]:
        values = mlflow_internals.samples(self)["constant_value"]
        return {"constant_value": sum(values) / len(values)}


def test_our_monitors_replace_mlflow_s_and_the_last_partial_interval_is_published(
    mlflow_uri: str, experiment_name: str
) -> None:
    runs = MlflowRuns(mlflow_uri)
    run_id = runs.create_run(runs.experiment_id(experiment_name))
    monitor = mlflow_internals.start_system_monitor(
        run_id, every_s=60, tracking_uri=mlflow_uri, monitors=[_Constant()]
    )
    time.sleep(0.5)  # far shorter than the interval: only the partial one exists
    mlflow_internals.finish_system_monitor(monitor)
    client = MlflowClient(mlflow_uri)
    assert client.get_run(run_id).data.metrics == {"system/constant_value": 7.0}
    history = client.get_metric_history(run_id, "system/constant_value")
    assert [m.step for m in history] == [0, 1]  # the start's sample, then the partial one


def test_samples_are_kept_per_metric_until_published() -> None:
    monitor = _Constant()
    monitor.collect_metrics()
    monitor.collect_metrics()
    assert mlflow_internals.samples(monitor) == {"constant_value": [7.0, 7.0]}
    assert monitor.aggregate_metrics() == {"constant_value": 7.0}


def test_the_keras_flavor_s_loader_is_wrapped_once_by_our_plugin() -> None:
    import mlflow.keras.load as module  # MLflow loads keras-harness's plugin, which wraps it

    installed = module._load_keras_model
    assert getattr(installed, "_harness", False), "the plugin did not wrap the Keras loader"
    mlflow_internals.wrap_keras_model_loader(module, lambda loader: lambda *a, **k: None)
    assert module._load_keras_model is installed  # once only

    plain: list[tuple[Any, ...]] = []
    module._load_keras_model = lambda *args, **kwargs: plain.append(args)
    try:
        mlflow_internals.wrap_keras_model_loader(
            module, lambda loader: lambda *args, **kwargs: loader(*args, "ours", **kwargs)
        )
        module._load_keras_model("path", "conf")
        assert plain == [("path", "conf", "ours")]
    finally:
        module._load_keras_model = installed


def test_a_data_set_becomes_the_entity_mlflow_log_input_would_log() -> None:
    import numpy as np
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.numpy_dataset import from_numpy

    source = CodeDatasetSource({"mlflow.source.name": "pkg.data:load"})
    dataset = from_numpy(np.zeros((4, 2)), targets=np.ones(4), source=source, name="d")
    entity = mlflow_internals.dataset_entity(dataset)
    assert (entity.name, entity.digest, entity.source_type) == ("d", dataset.digest, "code")
    assert mlflow_internals.source_type(source) == "code"
