"""YAML read the way users mean it: numbers by YAML 1.2's rules.

PyYAML follows YAML 1.1, where `1e-4` (no dot) and the `1e-05` that Python's `str(1e-05)`
writes are *strings*, and `010` is octal 8. A config saying `weight_decay: 1e-4` would pass
validation as text and fail inside the graph. `ConfigLoader` resolves integers and floats by
YAML 1.2's core schema instead; everything else is PyYAML's safe loader.
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


def load(text: str) -> Any:
    """Parse one YAML document with `ConfigLoader`."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def compose(text: str) -> Any:
    """The node tree of one document (for line numbers in messages)."""
    return yaml.compose(text, Loader=ConfigLoader)
