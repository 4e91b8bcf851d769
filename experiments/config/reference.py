"""The config described: resolved as YAML (`harness config`), and as a JSON Schema
(`harness schema`) that editors use to complete and check keys as the user types.

The shipped schema (`docs/config.schema.json`) is this module's output; a test keeps it so.
"""

from __future__ import annotations

import json
from typing import Any

from experiments.config.schema import ExperimentConfig

# The first line of a config that an editor (VS Code's YAML extension, any client of the
# yaml-language-server) reads to check it against the schema; relative to the config's folder.
SCHEMA_LINE = "# yaml-language-server: $schema=../../docs/config.schema.json"


def resolved_yaml(config: ExperimentConfig) -> str:
    """`config` as YAML, every default filled in, in the sections' order."""
    import yaml

    dumped = config.model_dump(mode="json", by_alias=True)
    return str(yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True, default_flow_style=None))


def schema() -> dict[str, Any]:
    """The JSON Schema of an experiment config (pydantic's), titled for editors."""
    document = ExperimentConfig.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **document,
        "title": "keras-harness experiment config",
    }


def schema_json() -> str:
    return json.dumps(schema(), indent=2, sort_keys=False) + "\n"


def reference_markdown() -> str:
    """The config reference (`docs/config.md`): every key with its type, default and
    description, straight from the schema, so the reference cannot drift from the code."""
    document = schema()
    definitions = document["$defs"]
    lines = [
        "# Config reference",
        "",
        "Every key of an experiment config, its type, default and meaning. Generated from the "
        "config's schema (`harness schema --markdown > docs/config.md`; a test keeps it "
        "current). `harness config CONFIG` prints a config with every default filled in.",
        "",
    ]
    required = set(document.get("required", []))
    for section, prop in document["properties"].items():
        mark = " (required)" if section in required else ""
        rows = _rows({"properties": {section: prop}}, "", definitions)[1:]  # its keys
        if not rows:  # a plain value (metrics): the section is its own row
            rows = [_row(section, prop, definitions)]
        lines += [f"## `{section}`{mark}", "", _sentence(prop.get("description", "")), ""]
        lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |", *rows, ""]
    return "\n".join(lines)


def _target(prop: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema `prop` stands for (through a `$ref`, optional or not), if any."""
    for option in [prop, *prop.get("anyOf", [])]:
        reference = option.get("$ref")
        if reference:
            return definitions[reference.rsplit("/", 1)[1]]  # type: ignore[no-any-return]
    return None


def _rows(node: dict[str, Any], prefix: str, definitions: dict[str, Any]) -> list[str]:
    rows = []
    required = set(node.get("required", []))
    for key, prop in node.get("properties", {}).items():
        if key in required:
            prop = {**prop, "default": _REQUIRED}
        target = _target(prop, definitions)
        values = prop.get("additionalProperties")
        items = prop.get("items")
        if target is not None:
            rows.append(_row(f"{prefix}{key}", prop, definitions))
            rows += _rows(target, f"{prefix}{key}.", definitions)
        elif isinstance(values, dict) and _target(values, definitions) is not None:
            rows.append(_row(f"{prefix}{key}", prop, definitions))
            rows += _rows(_target(values, definitions) or {}, f"{prefix}{key}.<path>.", definitions)
        elif isinstance(items, dict) and _target(items, definitions) is not None:
            rows.append(_row(f"{prefix}{key}", prop, definitions))
            rows += _rows(_target(items, definitions) or {}, f"{prefix}{key}[].", definitions)
        else:
            rows.append(_row(f"{prefix}{key}", prop, definitions))
    return rows


_REQUIRED = object()


def _row(key: str, prop: dict[str, Any], definitions: dict[str, Any]) -> str:
    default = prop.get("default", "")
    if default is _REQUIRED:
        default = "required"
    elif "default" in prop:
        default = f"`{json.dumps(default)}`"
    meaning = prop.get("description", "").replace("|", "\\|").replace("<", "&lt;")
    return f"| `{key}` | {_type(prop, definitions)} | {default} | {meaning} |"


def _type(prop: dict[str, Any], definitions: dict[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "$ref" in prop:
        return "mapping"
    if "anyOf" in prop:
        kinds = [_type(option, definitions) for option in prop["anyOf"]]
        return " or ".join(dict.fromkeys(k for k in kinds if k != "null")) + (
            " or null" if "null" in kinds else ""
        )
    kind = prop.get("type", "any")
    if kind == "array":
        items = prop.get("items") or prop.get("prefixItems")
        if isinstance(items, list):
            return f"[{', '.join(_type(i, definitions) for i in items)}]"
        return f"list of {_type(items, definitions)}" if items else "list"
    if kind == "object":
        return "mapping"
    return {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}.get(
        kind, str(kind)
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("." if text and not text.endswith(".") else "")
