"""Load a Keras model logged by keras-harness together with the user code it needs.

A logged model's MLmodel file lists, in its `keras` flavor, the custom layers, losses, metrics
and activations the model uses (`custom_objects: {name: "module:qualname"}`), and the model
directory holds that code under `code/`. This module puts `code/` on `sys.path`, imports
those objects and hands them to Keras, so the model loads in a process that never imported
the user's package:

- `mlflow.pyfunc.load_model(uri)`: this file is copied into each model's `code/` and named its
  pyfunc `loader_module`, so it works where keras-harness is not installed.
- `mlflow.keras.load_model(uri)`: where keras-harness is installed, its MLflow plugin
  (`tracking.mlflow.keras_model.plugin`) passes these objects to Keras.

It imports only the standard library, and keras and mlflow when a model is loaded.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

FLAVOR_KEY = "custom_objects"  # in the MLmodel's keras flavor: {name: "module:qualname"}
CODE_DIR = "code"  # the model directory's folder of user code (MLflow's code_paths layout)
MODULE_NAME = "harness_keras_loader"  # this file's name inside a model's code/


def custom_objects(model_dir: str, recorded: dict[str, str]) -> dict[str, Any]:
    """The objects `recorded` names, imported with `model_dir`'s `code/` first on sys.path."""
    code = os.path.join(model_dir, CODE_DIR)
    if recorded and os.path.isdir(code) and code not in sys.path:
        sys.path.insert(0, code)
    objects = {}
    for name, where in recorded.items():
        module, _, qualname = where.partition(":")
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        objects[name] = found
    return objects


def model_directory(path: str) -> str:
    """The model directory holding `MLmodel`: `path` itself or its parent (`path/data`)."""
    return path if os.path.isfile(os.path.join(path, "MLmodel")) else os.path.dirname(path)


def _load_pyfunc(path: str) -> Any:
    """MLflow's pyfunc entry point: the Keras flavor's pyfunc model, user objects in scope."""
    import keras
    from mlflow.keras.load import _load_pyfunc as load_keras_pyfunc
    from mlflow.models import Model

    model_dir = model_directory(path)
    conf = Model.load(os.path.join(model_dir, "MLmodel"))
    objects = custom_objects(model_dir, conf.flavors.get("keras", {}).get(FLAVOR_KEY, {}))
    with keras.saving.custom_object_scope(objects):
        return load_keras_pyfunc(path)
