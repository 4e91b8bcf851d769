"""Log a Keras model as an MLflow 3 logged model of a run, through an explicit client.

`mlflow.keras.log_model` resolves the fluent global tracking URI and active run; this does
the same steps with a given `MlflowClient` and run id, so trials logging side by side in one
process never touch each other's runs.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

SAVED_MODEL_DIR = "saved_model"  # inside each logged model: the `model.export` SavedModel

# The pip package providing each Keras backend, pinned into the saved model's requirements.
_BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def log_keras_model(
    client: Any,
    *,
    run_id: str,
    experiment_id: str,
    model: Any,
    name: str,
    input_example: Any | None = None,
    step: int = 0,
    params: Mapping[str, str] | None = None,
    metrics: Sequence[tuple[str, float, int, int]] = (),
    tags: Mapping[str, str] | None = None,
    retry: Callable[[Callable[[], Any]], Any] = lambda call: call(),
) -> str:
    """Create a logged model `name` linked to `run_id` (as its output at `step`); its id.

    The model page shows the signature and input example (from `input_example`), `params`,
    and `metrics` (`(key, value, step, timestamp)` points already logged to the run, so
    linking them adds no copies to the run's history); `mlflow.keras.load_model(f"models:/{id}")`
    and `runs:/<run_id>/<name>` load it. Each call to MLflow goes through `retry`, so a
    transient failure repeats that call, not the model: one logged model per call here.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import Model

    logged = retry(
        lambda: client.create_logged_model(
            experiment_id,
            name=name,
            source_run_id=run_id,
            params={key: str(value) for key, value in (params or {}).items()},
            tags=dict(tags or {}),
            model_type="keras",
        )
    )
    try:
        description = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
        with tempfile.TemporaryDirectory(prefix="mlflow-model-") as tmp:
            path = save_keras_model(
                model, Path(tmp) / "model", input_example=input_example, mlflow_model=description
            )
            retry(lambda: client.log_model_artifacts(logged.model_id, str(path)))
        output = LoggedModelOutput(logged.model_id, step=step)
        retry(lambda: client.log_outputs(run_id, [output]))
        if metrics:
            linked = [
                Metric(key, value, timestamp, at, model_id=logged.model_id, run_id=run_id)
                for key, value, at, timestamp in metrics
            ]
            retry(lambda: client.log_batch(run_id, metrics=linked, synchronous=True))
    except BaseException:
        with contextlib.suppress(Exception):  # the original error is the one to see
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    retry(lambda: client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY))
    return str(logged.model_id)


def save_keras_model(
    model: Any, path: Path, *, input_example: Any | None = None, mlflow_model: Any | None = None
) -> Path:
    """Save `model` to the new directory `path` with `mlflow.keras.save_model`; return `path`.

    With `input_example`, the signature is inferred from it and the model's prediction on it.
    """
    import mlflow.keras
    from mlflow.models import infer_signature

    signature = None
    if input_example is not None:
        signature = infer_signature(input_example, model.predict(input_example, verbose=0))
    # save_model writes the input example before creating `path`, so create it first.
    path.mkdir(parents=True)
    mlflow.keras.save_model(
        model,
        str(path),
        mlflow_model=mlflow_model,
        signature=signature,
        input_example=input_example,
        pip_requirements=_pip_requirements(),
    )
    _add_user_code(path)
    # The SavedModel for serving (TF Serving, TFLite converters): loads without any user code.
    model.export(str(path / SAVED_MODEL_DIR), format="tf_saved_model", verbose=False)
    return path


def _add_user_code(path: Path) -> None:
    """Record the model's custom objects in its MLmodel and copy their code into `code/`.

    `mlflow.pyfunc.load_model` then imports them through `tracking.mlflow.keras_model.loader`
    (copied in as the pyfunc loader module), `mlflow.keras.load_model` through keras-harness's
    MLflow plugin.
    """
    from mlflow.models import Model

    from tracking.mlflow.keras_model import loader as keras_loader
    from tracking.mlflow.keras_model.user_code import copy_user_code, user_objects

    description = Model.load(str(path / "MLmodel"))
    keras_flavor = description.flavors["keras"]
    objects = user_objects(path / keras_flavor.get("data", "data") / "model.keras")
    if not objects:
        return
    code = path / keras_loader.CODE_DIR
    copy_user_code(objects, code)
    code.mkdir(exist_ok=True)
    shutil.copy2(keras_loader.__file__, code / f"{keras_loader.MODULE_NAME}.py")
    keras_flavor[keras_loader.FLAVOR_KEY] = objects
    pyfunc = description.flavors["python_function"]
    pyfunc["loader_module"] = keras_loader.MODULE_NAME
    pyfunc["code"] = keras_loader.CODE_DIR
    description.save(str(path / "MLmodel"))


def _pip_requirements() -> list[str]:
    """Pin keras, numpy and the Keras backend (MLflow adds itself).

    Passing these explicitly skips MLflow's requirement inference, which reloads the model
    in a subprocess and takes seconds per saved model.
    """
    import keras

    packages = ["keras", "numpy", _BACKEND_PACKAGES.get(keras.backend.backend())]
    pins = []
    for package in packages:
        if package is None:
            continue
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            # E.g. installed as tensorflow-cpu: require the package, leave the version open.
            pins.append(package)
    return pins
