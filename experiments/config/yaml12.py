"""YAML read the way users mean it: numbers by YAML 1.2's rules, and no silent surprises.

PyYAML follows YAML 1.1, where `1e-4` (no dot) and the `1e-05` that Python's `str(1e-05)`
writes are *strings*, and `010` is octal 8. A config saying `weight_decay: 1e-4` would pass
validation as text and fail inside the graph. `ConfigLoader` resolves integers and floats by
YAML 1.2's core schema instead; everything else is PyYAML's safe loader, with three refusals:
a key given twice in one mapping (YAML keeps the last, dropping a whole section without a
word), aliases that expand beyond `MAX_VALUES` values, and nesting deeper than `MAX_DEPTH`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` with YAML 1.2 integers and floats."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(_INT_TAG, _INT, list("-+0123456789"))
ConfigLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT, list("-+.0123456789"))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0x"):
        return int(text, 16)
    if text.startswith("0o"):
        return int(text, 8)
    return int(text, 10)  # YAML 1.2: a leading zero is still decimal


ConfigLoader.add_constructor(_INT_TAG, _construct_int)


MAX_DEPTH = 100  # sections within sections: far beyond any config
MAX_VALUES = 100_000  # values once aliases are expanded


class DuplicateKey(yaml.MarkedYAMLError):
    """A key that appears twice in one mapping; `first_line` is where it first appears."""

    def __init__(self, key: str, first_line: int, mark: Any) -> None:
        super().__init__(problem=f"duplicate key '{key}'", problem_mark=mark)
        self.key, self.first_line = key, first_line


class TooLarge(yaml.YAMLError):
    """A document nested too deep, or whose aliases expand to too many values."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            key = key_node.value
            if key in seen and key != "<<":
                raise DuplicateKey(str(key), seen[key], key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node)


ConfigLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


def _check_size(root: Any) -> None:
    """Refuse a node graph deeper than `MAX_DEPTH` or larger than `MAX_VALUES` once aliases
    (shared nodes) are expanded; linear in the graph, whatever it expands to."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, children_done = stack.pop()
        if depth > MAX_DEPTH:
            raise TooLarge(f"it nests deeper than {MAX_DEPTH} levels")
        children = _children(node)
        if id(node) in sizes:
            continue
        if children_done or not children:
            sizes[id(node)] = 1 + sum(sizes.get(id(child), 1) for child in children)
            if sizes[id(node)] > MAX_VALUES:
                raise TooLarge(f"its aliases expand to more than {MAX_VALUES:,} values")
            continue
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def load(text: str) -> Any:
    """Parse one YAML document with `ConfigLoader`.

    Raises:
        yaml.YAMLError: malformed YAML; `DuplicateKey`; `TooLarge` (also for a document
            nested too deep for the parser itself).
    """
    try:
        node = yaml.compose(text, Loader=ConfigLoader)
    except RecursionError:
        raise TooLarge(f"it nests deeper than {MAX_DEPTH} levels") from None
    if node is None:
        return None
    _check_size(node)
    loader = ConfigLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def compose(text: str) -> Any:
    """The node tree of one document (for line numbers in messages)."""
    return yaml.compose(text, Loader=ConfigLoader)
