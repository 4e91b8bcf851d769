"""Save a Keras model in MLflow's Keras format, with its signature, to a local directory."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

# The pip package providing each Keras backend, pinned into the saved model's requirements.
_BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def save_keras_model(model: Any, path: Path, *, input_example: Any | None = None) -> Path:
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
        signature=signature,
        input_example=input_example,
        pip_requirements=_pip_requirements(),
    )
    return path


def _pip_requirements() -> list[str]:
    """Pin keras, numpy and the Keras backend (MLflow adds itself).

    Passing these explicitly skips MLflow's requirement inference, which reloads the model
    in a subprocess and takes ~7 s per saved model.
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
