"""The last and the best model, each with its EMA twin, logged in MLflow's Keras flavor with a
SavedModel; a model with a custom layer, activation, loss and metric reloads in a fresh
process that cannot import the user's package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from tests.experiments.configs import write_config

USER = "tests.experiments.user_code"
NAMES = ("model", "model_ema", "best_model", "best_model_ema")

FRESH_PROCESS = """
import importlib.util, json, sys
import numpy as np
assert importlib.util.find_spec("tests") is None, "the user's package must not be importable"
import keras, mlflow, mlflow.keras, mlflow.pyfunc, tensorflow as tf

run_id, ids, x = sys.argv[1], json.loads(sys.argv[2]), np.load("inputs.npy")
got = {}
files = mlflow.artifacts.download_artifacts(f"models:/{ids['model']}")
try:  # the control: Keras alone cannot find the user's classes
    keras.saving.load_model(f"{files}/data/model.keras")
    got["keras_alone"] = "loaded"
except TypeError as error:
    got["keras_alone"] = str(error)
for name in ids:
    got[name] = mlflow.keras.load_model(f"runs:/{run_id}/{name}").predict(x, verbose=0).tolist()
got["pyfunc"] = np.asarray(mlflow.pyfunc.load_model(f"models:/{ids['model']}").predict(x)).tolist()
served = tf.saved_model.load(f"{files}/saved_model")
got["saved_model"] = served.serve(tf.constant(x)).numpy().tolist()
loaded = mlflow.keras.load_model(f"models:/{ids['model']}")
got["classes"] = sorted(type(layer).__name__ for layer in loaded.layers)
got["loss"] = getattr(loaded.loss, "__name__", str(loaded.loss))
print(json.dumps(got))
"""


def _predict(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    from tests.experiments.user_code import centre_model

    model = centre_model()
    model.set_weights(weights)
    return np.asarray(model.predict(x, verbose=0))


def test_best_and_last_models_with_user_code_reload_in_a_fresh_process(
    in_tmp: Path, mlflow_uri: str
) -> None:
    from experiments.zoo.datasets import load_digits
    from harness.checkpoints import CheckpointStore

    config = write_config(
        in_tmp,
        {
            "model": {"name": f"{USER}:centre_model"},
            "loss": f"{USER}:logits_crossentropy",
            "metrics": [f"{USER}:MeanConfidence"],
            "ema": {"decay": 0.9},
            "trainer.engine": "custom",
            "trainer.epochs": 4,
            "optimizer.learning_rate": 0.05,  # val_loss bottoms out before the last epoch
            "checkpoint.dir": str(in_tmp / "ckpt" / "{run_id}"),
            "checkpoint.monitor": "val_loss",
        },
    )
    assert main(["run", str(config), "--tracking-uri", mlflow_uri]) == 0
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    run_id = run.info.run_id
    logged = {
        m.name: m
        for m in client.search_logged_models([run.info.experiment_id])
        if m.source_run_id == run_id
    }
    assert sorted(logged) == sorted(NAMES)

    # The best checkpoint is the epoch with the lowest val_loss; best_model carries its metrics,
    # linked to the points the run logged (no copies added to the run's history).
    history = client.get_metric_history(run_id, "val_loss")
    assert len(history) == 4
    lowest = min(history, key=lambda m: m.value)
    store = CheckpointStore(in_tmp / "ckpt" / run_id, keep_best=1, monitor="val_loss")
    best = store.best()
    assert best is not None and (best.monitor, best.step) == (lowest.value, lowest.step)
    best_metrics = {m.key: (m.value, m.step) for m in logged["best_model"].metrics or []}
    assert best_metrics["val_loss"] == (lowest.value, lowest.step)
    assert best_metrics["val_mean_confidence"][1] == lowest.step

    # What each logged model must predict: the checkpoints' weights in a model built here.
    x = load_digits(16)[0]
    fresh = in_tmp / "fresh"
    fresh.mkdir()
    np.save(fresh / "inputs.npy", x)
    _, last = store.load_latest()  # type: ignore[misc]
    _, best_state = store.load(best.path)
    expected = {
        "model": _predict(last["model"], x),
        "model_ema": _predict(last["ema"]["shadows"], x),
        "best_model": _predict(best_state["model"], x),
        "best_model_ema": _predict(best_state["ema"]["shadows"], x),
    }
    assert not np.allclose(expected["model"], expected["best_model"])  # four different models
    assert not np.allclose(expected["model"], expected["model_ema"])

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = mlflow_uri
    ids = {name: logged[name].model_id for name in NAMES}
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, run_id, json.dumps(ids)],
        cwd=fresh,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert "Could not locate" in got["keras_alone"], got["keras_alone"][:300]
    for name in NAMES:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(got["pyfunc"], expected["model"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["saved_model"], expected["model"], rtol=1e-5, atol=1e-6)
    assert "CentreLoss" in got["classes"] and got["loss"] == "logits_crossentropy"


def test_a_monitor_the_run_never_logs_warns_and_logs_no_best_model(
    in_tmp: Path, mlflow_uri: str
) -> None:
    config = write_config(
        in_tmp,
        {
            "trainer.epochs": 1,
            "tracking.experiment": "no-best",
            "checkpoint.dir": str(in_tmp / "ckpt" / "{run_id}"),
            "checkpoint.monitor": "val_los",
        },
    )
    with pytest.warns(UserWarning, match="no checkpoint recorded checkpoint.monitor 'val_los'"):
        assert main(["run", str(config), "--tracking-uri", mlflow_uri]) == 0
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("no-best").experiment_id
    names = {m.name for m in client.search_logged_models([experiment])}
    assert names == {"model"}
