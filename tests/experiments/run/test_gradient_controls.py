"""Gradient controls and fine-tuning from a config: what the run logs, and how a run whose
gradients turn NaN ends (FAILED with the reason, one line, exit 1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from experiments.config.loader import load_config
from experiments.run.run import run_experiment
from tests.experiments.configs import write_config


def test_clipping_decay_accumulation_and_finetuning_are_logged(
    in_tmp: Path, mlflow_uri: str
) -> None:
    changes = {
        "trainer.engine": "custom",
        "trainer.accumulation_steps": 2,  # 8 batches an epoch: 4 updates
        "trainer.on_nan": "skip_step",
        "optimizer.weight_decay": 0.01,
        "optimizer.global_clipnorm": 1.0,
        "finetune": {"freeze": ["probabilities"], "unfreeze_at_epoch": 2, "layer_lr": {"d*": 0.5}},
        "tracking.tensorboard_dir": str(in_tmp / "tb"),
        "tracking.experiment": "controls",
    }
    result = run_experiment(load_config(write_config(in_tmp, changes)), tracking_uri=mlflow_uri)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    params = run.data.params
    # The output layer (16 × 10 + 10) is frozen at the start; the hidden one trains.
    assert params["model.frozen_params"] == "170" and params["model.trainable_params"] == "1040"
    assert params["trainer.accumulation_steps"] == "2"
    assert params["optimizer.global_clipnorm"] == "1.0"
    assert params["finetune.layer_lr"] == '{"d*": 0.5}'  # MLflow names allow no "*"
    norms = client.get_metric_history(result.run_id, "step/grad_norm")
    assert [m.step for m in norms] == [2, 4, 6, 8]  # optimizer updates, logged every 2
    assert all(m.value > 0 for m in norms)
    skipped = client.get_metric_history(result.run_id, "step/skipped_steps")
    assert [m.value for m in skipped] == [0, 0, 0, 0]
    assert run.info.status == "FINISHED"


@pytest.mark.parametrize("on_nan", ["raise", "stop"])
def test_nan_gradients_end_the_run_failed_with_the_step_named(
    on_nan: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changes = {
        "data": {"name": "tests.experiments.user_code:poisoned_digits", "batch_size": 32},
        "data.shuffle": False,
        "trainer.on_nan": on_nan,
        "tracking.experiment": "nan",
    }
    uri = f"sqlite:///{in_tmp / 'store.db'}"
    code = main(["run", str(write_config(in_tmp, changes)), "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("harness:")]
    assert line.startswith("harness: training failed: the gradients of optimizer update 4")
    assert f"trainer.on_nan={on_nan}" in line and "batch loss=nan" in line
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("nan").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("the gradients of optimizer update 4")
    # stop ends training like TerminateOnNaN: what it made is still logged.
    logged = {m.name for m in client.search_logged_models([run.info.experiment_id])}
    assert ("model" in logged) == (on_nan == "stop")


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_mixed_float16_logs_the_loss_scale_and_the_precision(
    engine: str, in_tmp: Path, mlflow_uri: str
) -> None:
    changes = {
        "trainer.engine": engine,
        "trainer.precision": "mixed_float16",
        "trainer.epochs": 1,
        "tracking.tensorboard_dir": str(in_tmp / "tb"),
        "tracking.experiment": f"precision-{engine}",
    }
    result = run_experiment(load_config(write_config(in_tmp, changes)), tracking_uri=mlflow_uri)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["trainer.precision"] == "mixed_float16"
    scales = client.get_metric_history(result.run_id, "step/loss_scale")
    assert [m.step for m in scales] == [2, 4, 6, 8]  # 8 batches, logged every 2 updates
    assert {m.value for m in scales} == {2.0**15}  # no overflow on digits
    assert run.info.status == "FINISHED"


def test_mixed_float16_warns_of_16_bit_outputs_and_losses(in_tmp: Path) -> None:
    from experiments.run.prepare import prepare

    low_loss = {"trainer.precision": "mixed_float16"}
    low_loss["loss"] = "tests.experiments.user_code:float16_crossentropy"
    with pytest.warns(UserWarning, match=r"loss \(tests.*float16_crossentropy\) returns float16"):
        prepare(load_config(write_config(in_tmp, low_loss)))
    low_output = {
        "trainer.precision": "mixed_float16",
        "model": {"name": "tests.experiments.user_code:build_model"},
        "data": {"name": "tests.experiments.user_code:make_data", "batch_size": 16},
        "loss": "mse",
        "metrics": [],
    }
    with pytest.warns(UserWarning, match=r"outputs .* in 16 bits.*dtype='float32'"):
        prepare(load_config(write_config(in_tmp, low_output)))


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_a_mirrored_run_over_two_devices_is_tracked_as_one_model(
    engine: str, in_tmp: Path, mlflow_uri: str
) -> None:
    import keras
    import mlflow

    changes = {
        "trainer.engine": engine,
        "trainer.distribute": "mirrored",
        "trainer.devices": ["CPU:0", "CPU:1"],
        "trainer.accumulation_steps": 2,
        "ema": {"decay": 0.9},
        "tracking.tensorboard_dir": str(in_tmp / "tb"),
        "tracking.experiment": f"mirrored-{engine}",
    }
    result = run_experiment(load_config(write_config(in_tmp, changes)), tracking_uri=mlflow_uri)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(result.run_id)
    assert run.data.params["trainer.distribute"] == "mirrored"
    assert run.info.status == "FINISHED"
    norms = client.get_metric_history(result.run_id, "step/grad_norm")
    assert [m.step for m in norms] == [2, 4, 6, 8]  # 2 epochs × 4 updates of 2 micro-batches
    assert "val_accuracy" in run.data.metrics
    mlflow.set_tracking_uri(mlflow_uri)
    logged = {m.name: m for m in client.search_logged_models([run.info.experiment_id])}
    model = mlflow.keras.load_model(f"models:/{logged['model'].model_id}")
    assert isinstance(model, keras.Model) and len(model.weights) == 4  # one model, 2 layers


def test_mirrored_over_one_device_warns_and_prepares(in_tmp: Path) -> None:
    from experiments.run.prepare import prepare

    changes = {"trainer.distribute": "mirrored", "trainer.devices": ["CPU:0"]}
    with pytest.warns(UserWarning, match=r"mirrored over one device \(.*CPU:0\)"):
        prepared = prepare(load_config(write_config(in_tmp, changes)))
    assert prepared.model.distribute_strategy.num_replicas_in_sync == 1
