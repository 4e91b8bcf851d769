"""Losses and metrics with arguments, users' own classes, and schedules from a config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.config.loader import load_config
from experiments.run.run import run_experiment
from experiments.ui.runs_table import runs_frame
from tests.experiments.configs import write_config

USER = "tests.experiments.user_code"


def _run(tmp: Path, uri: str, **changes: Any):
    changes = {"tracking.tensorboard_dir": str(tmp / "tb"), **changes}
    return run_experiment(load_config(write_config(tmp, changes)), tracking_uri=uri)


@pytest.mark.parametrize(
    ("loss", "metrics", "metric_keys"),
    [
        (
            {"name": "sparse_categorical_crossentropy", "params": {"from_logits": True}},
            [{"name": "sparse_top_k_categorical_accuracy", "params": {"k": 3}}],
            ["sparse_top_k_categorical_accuracy"],
        ),
        (
            {"name": f"{USER}:ScaledCrossentropy", "params": {"scale": 2.0}},
            [f"{USER}:MeanConfidence", "accuracy"],
            ["mean_confidence", "accuracy"],
        ),
        (f"{USER}:logits_crossentropy", [f"{USER}:MeanConfidence"], ["mean_confidence"]),
    ],
    ids=["keras-with-params", "user-classes", "user-function"],
)
def test_losses_and_metrics_with_arguments_and_users_classes(
    loss, metrics, metric_keys, in_tmp: Path, mlflow_uri: str
) -> None:
    changes = {"loss": loss, "metrics": metrics, "tracking.experiment": "named-specs"}
    result = _run(in_tmp, mlflow_uri, **changes)
    run = MlflowClient(mlflow_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"  # the final model saved: metric classes instantiated
    for key in metric_keys:
        assert len(result.history[f"val_{key}"]) == 2
        assert f"val_{key}" in run.data.metrics
    (output,) = run.outputs.model_outputs
    assert str(MlflowClient(mlflow_uri).get_logged_model(output.model_id).status) == "READY"
    if isinstance(loss, dict):
        assert run.data.params["loss.name"] == loss["name"]


def test_a_config_schedule_with_warmup_and_plateau_is_applied_and_logged(
    in_tmp: Path, mlflow_uri: str
) -> None:
    # 240 examples / 32 -> 8 updates per epoch, 3 epochs: cosine over the 20 after warm-up.
    changes = {
        "trainer.epochs": 3,
        "trainer.log_every_n_steps": 1,
        "schedule": {"name": "cosine", "warmup_steps": 4, "alpha": 0.1},
        "plateau": {"monitor": "val_loss", "patience": 1, "factor": 0.5, "mode": "max"},
        "tracking.experiment": "schedules",
    }
    result = _run(in_tmp, mlflow_uri, **changes)
    client = MlflowClient(mlflow_uri)
    multipliers = [m.value for m in client.get_metric_history(result.run_id, "lr_multiplier")]
    assert multipliers == [1.0, 0.5, 0.25]  # val_loss falls: never an "improvement" in max
    logged = [m.value for m in client.get_metric_history(result.run_id, "step/learning_rate")]
    base = 0.01

    def rate(t: int) -> float:  # update index t = 0, 1, ...
        if t < 4:
            return base * t / 4
        cosine = 0.5 * (1 + np.cos(np.pi * min(t - 4, 20) / 20))
        return base * (0.1 + 0.9 * cosine)

    in_force = [1.0] * 8 + [1.0] * 8 + [0.5] * 8
    expected = [rate(t) * in_force[t] for t in range(24)]
    np.testing.assert_allclose(logged, expected, rtol=1e-5, atol=1e-9)
    params = client.get_run(result.run_id).data.params
    assert params["schedule.name"] == "cosine" and params["plateau.monitor"] == "val_loss"


def test_linear_lr_scaling_scales_every_rate_and_logs_the_scaled_one(
    in_tmp: Path, mlflow_uri: str
) -> None:
    # Batch 32 against reference 16: every rate doubled, a piecewise schedule's values too.
    changes = {
        "trainer.epochs": 1,
        "trainer.log_every_n_steps": 1,
        "data.lr_scaling": "linear",
        "data.reference_batch_size": 16,
        "schedule": {"name": "piecewise", "boundaries": [4], "values": [0.01, 0.005]},
        "tracking.experiment": "lr-scaling",
    }
    result = _run(in_tmp, mlflow_uri, **changes)
    client = MlflowClient(mlflow_uri)
    logged = [m.value for m in client.get_metric_history(result.run_id, "step/learning_rate")]
    # Update t applies the rate at iterations t - 1; piecewise keeps values[0] up to 4.
    np.testing.assert_allclose(logged, [0.02] * 5 + [0.01] * 3, rtol=1e-6)
    run = client.get_run(result.run_id).data
    assert run.params["data.lr_scaling"] == "linear"
    assert run.params["data.reference_batch_size"] == "16"
    assert "× batch 32 / reference 16, linear scaling" in run.tags["mlflow.note.content"]


def test_ema_is_evaluated_snapshotted_and_logged_as_its_own_model(
    in_tmp: Path, mlflow_uri: str
) -> None:
    import mlflow

    changes = {
        "ema": {"decay": 0.9, "snapshot_every_n_epochs": 1},
        "tracking.experiment": "ema",
    }
    result = _run(in_tmp, mlflow_uri, **changes)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert len(result.history["val_ema_loss"]) == 2 and "val_ema_accuracy" in run.data.metrics
    events = EventAccumulator(str(result.tensorboard_dir))
    events.Reload()
    tb = [e.value for e in events.Scalars("val_ema_loss")]
    np.testing.assert_allclose(tb, result.history["val_ema_loss"], rtol=1e-6)
    table = runs_frame(mlflow_uri, "ema")  # the `harness runs` columns
    assert table.loc[0, "val_ema_loss"] == pytest.approx(result.history["val_ema_loss"][-1])
    snapshots = {a.path for a in client.list_artifacts(result.run_id, "ema")}
    assert snapshots == {"ema/epoch-001.weights.h5", "ema/epoch-002.weights.h5"}
    models = {
        client.get_logged_model(o.model_id).name: o.model_id for o in run.outputs.model_outputs
    }
    assert set(models) == {"model", "model_ema"}
    ema_model = client.get_logged_model(models["model_ema"])
    assert {m.key for m in ema_model.metrics} == {"val_ema_loss", "val_ema_accuracy"}
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_uri)
    try:
        raw = mlflow.keras.load_model(f"models:/{models['model']}").predict(x, verbose=0)
        ema = mlflow.keras.load_model(f"models:/{models['model_ema']}").predict(x, verbose=0)
    finally:
        mlflow.set_tracking_uri(previous)
    assert not np.allclose(raw, ema)  # two different sets of weights
