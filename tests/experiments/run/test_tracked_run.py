"""A tracked run per engine lands in a real MLflow store and in TensorBoard event files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.config.loader import load_config
from experiments.run.run import run_experiment
from tests.experiments.configs import write_config

EPOCH_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _run(tmp: Path, uri: str, engine: str, **changes: Any):
    changes = {
        "trainer.engine": engine,
        "tracking.tensorboard_dir": str(tmp / "tb"),
        "tracking.experiment": f"tracked-{engine}",
        **changes,
    }
    config = load_config(write_config(tmp, changes))
    return run_experiment(config, tracking_uri=uri, config_path=str(tmp / "tiny.yaml"))


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_run_is_tracked_in_mlflow_and_tensorboard(engine: str, in_tmp: Path, mlflow_uri: str):
    result = _run(in_tmp, mlflow_uri, engine, **{"tracking.system_metrics_every_s": 0.2})
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"

    # Epoch metrics match the returned History, on the global step (240 examples / 32 -> 8).
    for key in EPOCH_KEYS:
        logged = client.get_metric_history(result.run_id, key)
        assert [m.step for m in logged] == [8, 16]
        np.testing.assert_allclose([m.value for m in logged], result.history[key], rtol=1e-6)
    assert [m.value for m in client.get_metric_history(result.run_id, "epoch")] == [1.0, 2.0]
    # Step metrics every 2 steps: that batch's values, and the learning rate actually applied.
    step_loss = client.get_metric_history(result.run_id, "step/batch_loss")
    assert [m.step for m in step_loss] == list(range(2, 17, 2))
    lr = client.get_metric_history(result.run_id, "step/learning_rate")
    assert {round(m.value, 8) for m in lr} == {0.01}
    assert len(client.get_metric_history(result.run_id, "steps_per_sec")) == 2
    assert len(client.get_metric_history(result.run_id, "epoch_time_s")) == 2
    # MLflow's system-metrics monitor sampled the run.
    assert "system/cpu_utilization_percentage" in run.data.metrics
    assert "system/system_memory_usage_megabytes" in run.data.metrics

    params = run.data.params
    assert params["trainer.engine"] == engine
    assert params["optimizer.learning_rate"] == "0.01"
    assert params["model.params.hidden_units"] == "[16]"
    assert params["loss.name"] == "sparse_categorical_crossentropy" and "loss" not in params
    assert "None" not in params.values() and "trainer.steps_per_epoch" not in params
    tags = run.data.tags
    assert tags["harness.engine"] == engine
    assert tags["harness.tensorflow_version"]
    assert tags["harness.keras_version"] == keras.__version__
    assert "CPU" in tags["harness.devices"] and tags["harness.host"]
    assert tags["mlflow.user"] and not {"devices", "host", "tensorflow.version"} & set(tags)
    assert "| engine | " + engine + " |" in tags["mlflow.note.content"]

    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "history.csv"} <= artifacts
    csv = Path(client.download_artifacts(result.run_id, "history.csv", str(in_tmp)))
    lines = csv.read_text().splitlines()
    assert lines[0] == "epoch," + ",".join(result.history)
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    _assert_training_data_is_a_run_input(run)
    _assert_final_model_is_a_logged_model(client, run, result, mlflow_uri)

    # TensorBoard holds the same scalars on the same global steps.
    events = EventAccumulator(str(result.tensorboard_dir))
    events.Reload()
    for key in (*EPOCH_KEYS, "step/batch_loss", "step/learning_rate"):
        tb = events.Scalars(key)
        ml = client.get_metric_history(result.run_id, key)
        assert [e.step for e in tb] == [m.step for m in ml]
        np.testing.assert_allclose([e.value for e in tb], [m.value for m in ml], rtol=1e-6)


def _assert_training_data_is_a_run_input(run: Any) -> None:
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"digits", "digits-validation"}
    training = inputs["digits"]
    assert {(t.key, t.value) for t in training.tags} == {("mlflow.data.context", "training")}
    assert json.loads(training.dataset.profile)["features_shape"] == [240, 64]
    assert json.loads(training.dataset.schema)  # features and targets with their shapes
    assert "experiments.zoo.datasets:load_digits" in training.dataset.source
    assert training.dataset.digest


def _assert_final_model_is_a_logged_model(client, run, result, mlflow_uri: str) -> None:
    import mlflow

    (output,) = run.outputs.model_outputs
    assert output.step == 16  # the final global step
    model = client.get_logged_model(output.model_id)
    assert model.name == "model" and model.source_run_id == result.run_id
    assert str(model.status) == "READY"
    assert model.params["optimizer.learning_rate"] == "0.01"
    linked = {m.key: m.value for m in model.metrics}
    assert {*EPOCH_KEYS} <= set(linked)
    assert linked["val_loss"] == pytest.approx(result.history["val_loss"][-1])
    # Linking the final metrics added no second point to the run's own history.
    assert [m.step for m in client.get_metric_history(result.run_id, "val_loss")] == [8, 16]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_uri)
    try:
        for uri in (f"models:/{output.model_id}", f"runs:/{result.run_id}/model"):
            info = mlflow.models.get_model_info(uri)
            assert info.signature is not None and info.model_id == output.model_id
            loaded = mlflow.keras.load_model(uri)
            assert loaded.predict(np.zeros((2, 64), "float32"), verbose=0).shape == (2, 10)
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize("every_s", [0, 0.2])
def test_system_metrics_interval_zero_turns_the_monitor_off(every_s, in_tmp, mlflow_uri):
    changes = {"tracking.system_metrics_every_s": every_s, "trainer.epochs": 1}
    result = _run(in_tmp, mlflow_uri, "fit", **changes)
    metrics = MlflowClient(mlflow_uri).get_run(result.run_id).data.metrics
    system = sorted(key for key in metrics if key.startswith("system/"))
    if every_s == 0:
        assert system == []
    else:  # MLflow's own monitor, the whole host: at least its last, partial interval
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
            system
        )


class Explode(keras.callbacks.Callback):
    def __init__(self, error: str = "runtime") -> None:
        super().__init__()
        self.error = error

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.error == "interrupt":
            raise KeyboardInterrupt
        raise RuntimeError("exploded on purpose")


def _last_run(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_an_exception_marks_the_run_failed_with_the_error(engine, in_tmp, mlflow_uri):
    callbacks = [{"class_path": "tests.experiments.run.test_tracked_run.Explode"}]
    with pytest.raises(RuntimeError, match="exploded on purpose"):
        _run(in_tmp, mlflow_uri, engine, callbacks=callbacks, **{"tracking.experiment": "fail"})
    run = _last_run(mlflow_uri, "fail")
    assert run.info.status == "FAILED"
    assert "exploded on purpose" in run.data.tags["error"]
    # Metrics logged before the failure were flushed, not lost.
    assert len(MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "step/batch_loss")) == 4


def test_ctrl_c_marks_the_run_killed(in_tmp, mlflow_uri):
    callbacks = [
        {
            "class_path": "tests.experiments.run.test_tracked_run.Explode",
            "init_args": {"error": "interrupt"},
        }
    ]
    with pytest.raises(KeyboardInterrupt):
        _run(in_tmp, mlflow_uri, "custom", callbacks=callbacks, **{"tracking.experiment": "killed"})
    assert _last_run(mlflow_uri, "killed").info.status == "KILLED"


def test_user_factories_by_import_path_with_a_tf_data_pipeline(in_tmp, mlflow_uri):
    result = _run(
        in_tmp,
        mlflow_uri,
        "custom",
        model={"name": "tests.experiments.user_code:build_model", "params": {"width": 4}},
        data={"name": "tests.experiments.user_code.make_data", "params": {"n": 96}},
        loss="mean_squared_error",
        metrics=["mean_absolute_error"],
        **{"tracking.experiment": "user-code"},
    )
    assert set(result.history) == {
        "loss",
        "mean_absolute_error",
        "val_loss",
        "val_mean_absolute_error",
    }
    run = MlflowClient(mlflow_uri).get_run(result.run_id)
    assert run.data.params["model.name"] == "tests.experiments.user_code:build_model"
    assert run.info.status == "FINISHED"


def test_runs_of_the_same_seeded_config_get_different_names(in_tmp, mlflow_uri):
    client = MlflowClient(mlflow_uri)
    names = set()
    for _ in range(2):
        result = _run(
            in_tmp, mlflow_uri, "custom", **{"trainer.epochs": 1, "tracking.experiment": "names"}
        )
        names.add(client.get_run(result.run_id).info.run_name)
    assert len(names) == 2


def test_history_columns_split_vector_metrics_per_component() -> None:
    from experiments.run.run import _history_values
    from harness.logs import scalar_logs

    history = {"loss": [0.5, 0.25], "f1": [np.array([0.1, 0.2]), np.array([0.3, 0.4])]}
    assert _history_values(history, scalar_logs) == {
        "loss": [0.5, 0.25],
        "f1/0": [pytest.approx(0.1), pytest.approx(0.3)],
        "f1/1": [pytest.approx(0.2), pytest.approx(0.4)],
    }
