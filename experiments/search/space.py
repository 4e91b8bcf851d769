"""A trial's config: the base config plus the values Optuna suggests for `search.space`.

Conditional paths (`when:`) are suggested only once the paths they depend on are decided
and match, so Optuna's samplers see the conditional space as it is. A choice that is not a
plain value (a list of layer widths) is suggested by its JSON text and decoded back.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from experiments.config.search_schema import Param

_PLAIN = (str, int, float, bool, type(None))


def suggest(trial: Any, space: dict[str, Param]) -> dict[str, Any]:
    """The values `trial` suggests for `space`, by config path (conditions respected)."""
    decided: dict[str, Any] = {}
    skipped: set[str] = set()
    pending = dict(space)
    while pending:
        ready = [
            path
            for path, param in pending.items()
            if all(c in decided or c in skipped for c in param.when)
        ]
        if not ready:
            raise ValueError(
                f"search.space: the conditions of {sorted(pending)} depend on each other in a "
                "cycle: make one of them unconditional"
            )
        for path in ready:
            param = pending.pop(path)
            if all(_matches(decided.get(c), wanted) for c, wanted in param.when.items()):
                decided[path] = _suggest_one(trial, path, param)
            else:
                skipped.add(path)
    return decided


def grid(space: dict[str, Param]) -> dict[str, list[Any]]:
    """Every value of each path, for Optuna's GridSampler (floats need a step)."""
    values: dict[str, list[Any]] = {}
    for path, param in space.items():
        if param.categorical is not None:
            values[path] = [_encoded(choice) for choice in param.categorical]
        else:
            low, high = param.float_ or param.int_  # type: ignore[misc]
            step = param.step or 1
            count = int(round((high - low) / step)) + 1
            values[path] = [low + i * step for i in range(count) if low + i * step <= high + 1e-12]
            if param.int_ is not None:
                values[path] = [int(v) for v in values[path]]
    return values


def apply(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the raw config mapping `raw` with each dotted path set to its value."""
    changed = copy.deepcopy(raw)
    for path, value in values.items():
        node = changed
        *parents, leaf = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else child
            node = child
        node[leaf] = value
    return changed


def _suggest_one(trial: Any, path: str, param: Param) -> Any:
    if param.float_ is not None:
        low, high = param.float_
        return trial.suggest_float(path, low, high, log=param.log, step=param.step)
    if param.int_ is not None:
        low, high = param.int_
        return trial.suggest_int(path, low, high, step=int(param.step or 1), log=param.log)
    choices = param.categorical or []
    if all(isinstance(choice, _PLAIN) for choice in choices):
        return trial.suggest_categorical(path, choices)
    return json.loads(trial.suggest_categorical(path, [_encoded(c) for c in choices]))


def _encoded(choice: Any) -> Any:
    return choice if isinstance(choice, _PLAIN) else json.dumps(choice)


def _matches(value: Any, wanted: Any) -> bool:
    options = wanted if isinstance(wanted, list) else [wanted]
    return any(value == option or str(value) == str(option) for option in options)
