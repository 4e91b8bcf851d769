"""keras-harness's MLflow plugin: `mlflow.keras.load_model` finds a model's user code.

MLflow's Keras 3 flavor has no `code_paths`: it calls `keras.saving.load_model` without
custom objects, and Keras cannot locate a user's class ("Could not locate class 'CentreLoss'")
unless the user imported it first. MLflow loads the plugins installed packages declare when
it is imported; this one (entry point `mlflow.run_context_provider`, a provider that adds no
tags) wraps the flavor's loader once `mlflow.keras.load` is imported, so a model that records
`custom_objects` (see `tracking.mlflow.keras_model.loader`) loads with them. Models without
that record load exactly as before. Nothing here imports keras or TensorFlow.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import Any

from mlflow.tracking.context.abstract_context import RunContextProvider

from tracking.mlflow.keras_model.loader import FLAVOR_KEY, custom_objects

_TARGET = "mlflow.keras.load"


class HarnessRunContext(RunContextProvider):
    """The entry point MLflow loads; it adds no tags to runs."""

    def in_context(self) -> bool:
        return False

    def tags(self) -> dict[str, str]:
        return {}


def _wrap(module: Any) -> None:
    # Imported here, not with the plugin: MLflow loads the plugin while it is imported itself.
    from tracking.mlflow.mlflow_internals import wrap_keras_model_loader

    def with_user_code(original: Any) -> Any:
        def load_with_user_code(
            path: str, model_conf: Any, custom_objects_: Any = None, **kwargs: Any
        ) -> Any:
            recorded = model_conf.flavors.get("keras", {}).get(FLAVOR_KEY)
            if recorded:
                custom_objects_ = {**custom_objects(path, recorded), **(custom_objects_ or {})}
            return original(path, model_conf, custom_objects_, **kwargs)

        return load_with_user_code

    wrap_keras_model_loader(module, with_user_code)


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Finds `mlflow.keras.load` with the other finders and wraps it once it has run."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _TARGET:
            return None
        others = [finder for finder in sys.meta_path if finder is not self]
        for finder in others:
            spec = getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _WrappingLoader(spec.loader)
                return spec
        return None


class _WrappingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        try:
            _wrap(module)
        except Exception:  # never break MLflow: without the wrap, models load as before
            pass


def _install() -> None:
    if _TARGET in sys.modules:
        _wrap(sys.modules[_TARGET])
    elif not any(isinstance(finder, _WrapOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WrapOnImport())


_install()
