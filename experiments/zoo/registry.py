"""Models, data sets, optimizers, losses, metrics and callbacks by registry name or import path.

A user's own code is named by import path (`my_pkg.models:build_model`, or the dotted
`my_pkg.models.build_model`), so nothing in this project has to change to use it.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from experiments.errors import UsageError, first_line, user_code_error

MODELS: dict[str, str] = {
    "mlp": "experiments.zoo.models:build_mlp",
    "cnn": "experiments.zoo.models:build_cnn",
    "regression_mlp": "experiments.zoo.models:build_regression_mlp",
}
DATASETS: dict[str, str] = {
    "digits": "experiments.zoo.datasets:load_digits",
    "digits_images": "experiments.zoo.datasets:load_digits_images",
    "diabetes": "experiments.zoo.datasets:load_diabetes",
}


def is_import_path(name: str) -> bool:
    return ":" in name or "." in name


def import_object(path: str, *, what: str) -> Any:
    """Import `pkg.mod:attr` or `pkg.mod.attr`.

    Raises:
        UsageError: the module or attribute does not exist.
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise UsageError(f"{what}: '{path}' is not an import path. Write it as package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(
            f"{what}: cannot import module '{module_name}' of '{path}' ({error}). "
            "Check the spelling and that the package is installed or on PYTHONPATH"
        ) from None
    except Exception as error:  # the module itself raised while it was imported
        raise user_code_error(
            f"{what}: importing module '{module_name}' of '{path}'",
            error,
            fix="Fix that module",
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in dir(module) if not n.startswith("_"))
        close = difflib.get_close_matches(attr, public, n=1)
        hint = f" Did you mean '{module_name}:{close[0]}'?" if close else ""
        raise UsageError(
            f"{what}: module '{module_name}' has no attribute '{attr}'.{hint}"
        ) from None


def resolve_factory(name: str, registry: Mapping[str, str], *, what: str) -> Callable[..., Any]:
    """A model or data factory by registry name or import path."""
    if name in registry:
        return import_object(registry[name], what=what)
    if is_import_path(name):
        factory = import_object(name, what=what)
        if not callable(factory):
            raise UsageError(f"{what}: '{name}' is not callable; name a function or class")
        return factory
    raise UsageError(
        f"{what}: unknown name '{name}'. Valid names: {', '.join(sorted(registry))}, "
        "or an import path like my_pkg.module:build"
    )


def _keras_names(module: Any, *, predicate: Callable[[Any], bool]) -> list[str]:
    return sorted(
        n
        for n in dir(module)
        if n.islower() and not n.startswith("_") and predicate(getattr(module, n))
    )


def build_optimizer(name: str, learning_rate: Any, params: Mapping[str, Any]) -> Any:
    """A Keras optimizer by name (`adam`) or import path, with its own params.

    `learning_rate` is a number or a `LearningRateSchedule`.
    """
    config = {"learning_rate": learning_rate, **params}
    return instantiate(resolve_optimizer(name), config, what="optimizer.params", shown=dict(params))


def resolve_optimizer(name: str) -> type:
    """The optimizer class a name (`adam`, any case) or import path names.

    Raises:
        UsageError: no such optimizer; the message lists Keras's.
    """
    import keras

    if is_import_path(name):
        cls = import_object(name, what="optimizer.name")
    else:
        classes = {
            n.lower(): getattr(keras.optimizers, n)
            for n in dir(keras.optimizers)
            if isinstance(getattr(keras.optimizers, n), type)
            and issubclass(getattr(keras.optimizers, n), keras.optimizers.Optimizer)
            and n not in ("Optimizer", "LossScaleOptimizer", "MultiOptimizer")
        }
        if name.lower() not in classes:
            raise UsageError(
                f"optimizer.name: unknown optimizer '{name}'. Valid names: "
                f"{', '.join(sorted(classes))}, or an import path"
            )
        cls = classes[name.lower()]
    return cls  # type: ignore[no-any-return]


def instantiate(
    cls: Any, kwargs: Mapping[str, Any], *, what: str, shown: Mapping[str, Any] | None = None
) -> Any:
    """`cls(**kwargs)`; rejected arguments are bad input, named with `shown` (default: all).

    Raises:
        UsageError: the class refused the arguments; the message quotes its own reason.
    """
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise UsageError(
            f"{what}: {cls.__name__} rejected {dict(kwargs if shown is None else shown)}: "
            f"{first_line(error)}. Use its own argument names"
        ) from None
    except Exception as error:  # the class's own code failed
        raise user_code_error(
            f"{what}: {cls.__name__}(...)", error, fix="Fix it or its arguments"
        ) from None


def resolve_loss(spec: Any) -> Any:
    """A Keras loss by name or import path, or `{name, params}` (validated now).

    A class (by import path, or a Keras name given `params`) is instantiated with its params.
    """
    import keras

    name, params = _name_and_params(spec)
    return _resolve(keras.losses, keras.losses.Loss, name, params, what="loss", kind="loss")


def resolve_metric(spec: Any, index: int) -> Any:
    """A Keras metric by name or import path, or `{name, params}` (validated now)."""
    import keras

    name, params = _name_and_params(spec)
    what = f"metrics[{index}]"
    if name in ("accuracy", "acc", "crossentropy", "ce") and not params:
        return name  # resolved by compile() from the loss and label shapes
    return _resolve(keras.metrics, keras.metrics.Metric, name, params, what=what, kind="metric")


def _name_and_params(spec: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        return spec, {}
    return spec.name, dict(spec.params)


def _resolve(
    module: Any, base: type, name: str, params: dict[str, Any], *, what: str, kind: str
) -> Any:
    if is_import_path(name):
        found = import_object(name, what=what)
    elif params:
        classes = _keras_classes(module, base)
        found = classes.get(name) or classes.get(_snake(name))
        if found is None:
            raise UsageError(
                f"{what}: no Keras {kind} class named '{name}' takes params. Valid names: "
                f"{', '.join(sorted(classes))}, or an import path"
            )
    else:
        return _known_keras_name(module, name, what=what, kind=kind)
    if isinstance(found, type):
        return instantiate(found, params, what=f"{what}.params")
    if params:
        raise UsageError(
            f"{what}: '{name}' is a function, which takes no params; name a class (a "
            f"keras.{module.__name__.rsplit('.', 1)[-1]} class or your own) to give it params"
        )
    return found


def _keras_classes(module: Any, base: type) -> dict[str, type]:
    """Keras's own classes of `base` in `module`, by snake-case name."""
    return {
        _snake(attr): getattr(module, attr)
        for attr in dir(module)
        if isinstance(getattr(module, attr), type)
        and issubclass(getattr(module, attr), base)
        and getattr(module, attr) is not base
    }


def _snake(name: str) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z][a-z])|(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _known_keras_name(module: Any, name: str, *, what: str, kind: str) -> str:
    """`name` if `module.get` knows it, else a UsageError listing the valid names."""
    try:
        module.get(name)
    except (ValueError, TypeError):
        valid = _keras_names(module, predicate=callable)
        extra = "accuracy, " if kind == "metric" else ""
        raise UsageError(
            f"{what}: unknown {kind} '{name}'. Valid names: {extra}{', '.join(valid)}, "
            "or an import path"
        ) from None
    return name


def build_callback(class_path: str, init_args: Mapping[str, Any], index: int) -> Any:
    """Instantiate a Keras callback from its import path and arguments."""
    import keras

    what = f"callbacks[{index}].class_path"
    cls = import_object(class_path, what=what)
    if not (isinstance(cls, type) and issubclass(cls, keras.callbacks.Callback)):
        raise UsageError(
            f"{what}: '{class_path}' is not a keras.callbacks.Callback subclass; "
            "name a callback class such as keras.callbacks.EarlyStopping"
        )
    return instantiate(cls, init_args, what=f"callbacks[{index}].init_args")
