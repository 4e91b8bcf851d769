"""Load a YAML config, apply dotted `key=value` overrides, validate, and explain failures."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from experiments.config import yaml12 as yaml_loader
from experiments.config.schema import ExperimentConfig
from experiments.errors import UsageError


def load_config(
    path: str | Path, overrides: Sequence[str] = (), *, shown_as: str | None = None
) -> ExperimentConfig:
    """Read, override and validate an experiment config.

    `shown_as`: what messages call the file (a run's config, downloaded to a temporary file
    the user never wrote), instead of its path.

    Raises:
        UsageError: the file is missing or malformed, an override is malformed, or a value
            breaks a rule; the message says which, where and how to fix it.
    """
    path = Path(path)
    shown = shown_as or str(path)
    if not path.is_file():
        raise UsageError(
            f"config file not found: '{path}'. Pass the path of a YAML config, e.g. "
            "experiments/configs/digits_mlp.yaml"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(
            f"cannot read config file '{path}': {error}. Pass a readable UTF-8 YAML file"
        ) from None
    try:
        raw = yaml_loader.load(text)
    except yaml_loader.DuplicateKey as twice:
        raise UsageError(
            f"{shown}, line {twice.problem_mark.line + 1}: the key '{_quoted(twice.key)}' appears "
            f"twice in one section (first at line {twice.first_line}); YAML would keep only "
            "the second, dropping the first without a word. Keep one"
        ) from None
    except yaml_loader.TooLarge as large:
        raise UsageError(
            f"{shown}: the config is too large to be one ({large}). Write it as plain sections"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown line"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UsageError(
            f"{shown}: malformed YAML at {where}: {problem}. Fix the YAML syntax there"
        ) from None
    if not isinstance(raw, dict):
        raise UsageError(
            f"{shown}: a config must be a YAML mapping of sections (model, data, ...). "
            f"Received {type(raw).__name__}; start the file with 'model:'"
        )
    for override in overrides:
        _apply_override(raw, override)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise UsageError(_explain(error, shown, text, overrides)) from None


def _apply_override(raw: dict[str, Any], given: str) -> None:
    key, sep, value = given.partition("=")
    override = _quoted(given)  # as messages show it
    if not sep or not key or any(not part for part in key.split(".")):
        raise UsageError(
            f"malformed override '{override}': overrides are dotted key=value pairs. "
            "Write it like trainer.epochs=3"
        )
    try:
        parsed = yaml_loader.load(value) if value else ""
    except yaml.YAMLError as error:
        problem = _quoted(
            str(getattr(error, "problem", None) or error).splitlines()[0]
            if not isinstance(error, yaml_loader.TooLarge)
            else f"too large: {error}"
        )
        raise UsageError(
            f"override '{override}': the value is not valid YAML ({problem}). Values are read "
            f"as YAML; quote a plain string, e.g. {_quoted(key)}='\"...\"'"
        ) from None
    node: Any = raw
    *parents, leaf = key.split(".")
    for part in parents:
        if isinstance(node, list):
            node = _list_item(node, part, override)
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict | list):
            raise UsageError(
                f"override '{override}': '{part}' is a value, not a section, so it has no "
                f"key '{leaf}'. Override '{part}' itself"
            )
        node = child
    if isinstance(node, list):
        index = _index(node, leaf, override)
        node[index] = parsed
    else:
        node[leaf] = parsed


def _index(items: list[Any], part: str, override: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise UsageError(
            f"override '{override}': '{part}' is not an index of a list of {len(items)} "
            f"items. Use 0 to {len(items) - 1}, e.g. callbacks.0.init_args.patience=5"
        )
    return int(part)


def _list_item(items: list[Any], part: str, override: str) -> Any:
    item = items[_index(items, part, override)]
    if not isinstance(item, dict | list):
        raise UsageError(f"override '{override}': item {part} is a value, not a section")
    return item


def _explain(error: ValidationError, path: str, text: str, overrides: Sequence[str]) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    dotted = _quoted(".".join(loc))
    where = _where(text, first["loc"], path, overrides)
    if first["type"] == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f" Did you mean '{'.'.join([*loc[:-1], close[0]])}'?" if close else ""
        return f"{where}: unknown key '{dotted}'.{hint} Valid keys here: {', '.join(valid)}"
    if first["type"] == "missing":
        return f"{where}: missing required key '{dotted}'. Add it to the config"
    received = _quoted(repr(first.get("input")))
    return (
        f"{where}: {dotted}: {first['msg']}; received {received}. "
        f"Fix it in the file or override it: {dotted}=VALUE"
    )


QUOTED = 120  # characters of a value a message quotes


def _quoted(text: str) -> str:
    """`text`, cut to what an error line can show (a value may be a whole file long)."""
    return text if len(text) <= QUOTED else f"{text[:QUOTED]}… ({len(text):,} characters)"


def _valid_keys(section_loc: list[str]) -> list[str]:
    model: type[BaseModel] = ExperimentConfig
    keyed = False  # the part after a mapping-typed field is one of its keys (search.space.<path>)
    for part in section_loc:
        if part.isdigit() or keyed:
            keyed = False
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        keyed = "dict" in str(annotation)
        inner = getattr(annotation, "__args__", (annotation,))
        found = [t for t in inner if isinstance(t, type) and issubclass(t, BaseModel)]
        if not found:
            return []
        model = found[0]
    return sorted((info.alias or name) for name, info in model.model_fields.items())


def _where(text: str, loc: tuple[Any, ...], path: str, overrides: Sequence[str]) -> str:
    dotted = ".".join(str(part) for part in loc)
    if any(o.partition("=")[0] == dotted for o in overrides):
        return f"{path} (command-line override)"
    line = _line_of(yaml_loader.compose(text), loc)
    return f"{path}, line {line}" if line else str(path)


def _line_of(node: Any, loc: tuple[Any, ...]) -> int | None:
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == str(part)]
            if not match:
                return line
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
