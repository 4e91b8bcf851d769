"""Find the user code a saved Keras model needs, and copy it beside the model.

Keras saves a custom class by module and name and a custom function (activation, loss) by
name only; loading needs both imported and passed as `custom_objects`. `user_objects` reads
the saved model's config and finds each such object among the modules imported now (the user's
code is imported while it trains); `copy_user_code` copies their top-level packages' Python
files into the model's `code/` (MLflow's `code_paths` layout), so
`tracking.mlflow.keras_model.loader` can import them anywhere.
"""

from __future__ import annotations

import inspect
import json
import shutil
import sys
import sysconfig
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_KERAS_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp", "tensorflow", "tf_keras")


def user_objects(keras_file: Path) -> dict[str, str]:
    """`{name Keras looks up: "module:qualname"}` for the custom objects in `keras_file`.

    An object that cannot be found is warned about by name (the model then needs
    `custom_objects` to load).
    """
    with zipfile.ZipFile(keras_file) as archive:
        config = json.loads(archive.read("config.json"))
    found: dict[str, str] = {}
    for entry in _serialized_objects(config):
        module, class_name = str(entry["module"]), str(entry["class_name"])
        if module == "builtins" and class_name == "function":
            name = str(entry.get("config"))
            where = _find_function(name)
        elif module.split(".")[0] in _KERAS_PACKAGES or module == "builtins":
            continue
        else:
            name = str(entry.get("registered_name") or class_name)
            where = _find_class(module, class_name)
        if where is None:
            warnings.warn(
                f"the saved model uses '{name}' ({module}), which was not found among the "
                "imported modules: load it with custom_objects={" + repr(name) + ": ...}",
                stacklevel=3,
            )
        else:
            found[name] = where
    return found


def copy_user_code(objects: dict[str, str], destination: Path) -> list[str]:
    """Copy the top-level packages (or modules) of `objects` that are not installed libraries
    into `destination`, Python files only; the names copied."""
    copied = []
    for top in sorted({where.split(":")[0].split(".")[0] for where in objects.values()}):
        module = sys.modules.get(top)
        source = Path(getattr(module, "__file__", None) or "")
        if module is None or not source.name or _is_library(source):
            continue
        if hasattr(module, "__path__"):  # a package: all its Python files
            root = source.parent
            for file in root.rglob("*.py"):
                if "__pycache__" not in file.parts:
                    target = destination / top / file.relative_to(root)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target)
        else:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / source.name)
        copied.append(top)
    return copied


def _serialized_objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "module" in node and "class_name" in node and node["module"] is not None:
            yield node
        for value in node.values():
            yield from _serialized_objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _serialized_objects(value)


def _find_class(module: str, class_name: str) -> str | None:
    found = getattr(sys.modules.get(module), class_name, None)
    return f"{module}:{class_name}" if isinstance(found, type) else None


def _find_function(name: str) -> str | None:
    """The first user module (not an installed library) defining a function `name`."""
    for module_name, module in list(sys.modules.items()):
        candidate = getattr(module, name, None)
        if not (inspect.isfunction(candidate) and candidate.__name__ == name):
            continue
        if candidate.__module__ != module_name:
            continue  # imported from elsewhere: found under its own module
        file = getattr(module, "__file__", None)
        if file and not _is_library(Path(file)):
            return f"{module_name}:{name}"
    return None


def _library_roots() -> list[Path]:
    paths = sysconfig.get_paths()
    keys = ("stdlib", "platstdlib", "purelib", "platlib")
    return [Path(paths[key]).resolve() for key in keys if key in paths]


def _is_library(file: Path) -> bool:
    resolved = file.resolve()
    return any(resolved.is_relative_to(root) for root in _library_roots())
