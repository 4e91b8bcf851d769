"""Numbers as a person reads them, the same in every table and line the CLI prints."""

from __future__ import annotations

import math
from typing import Any


def as_number(value: Any) -> float | None:
    """`value` (a number or a numeric string) as a float; None for anything else and NaN."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def readable(value: Any, key: str = "") -> str:
    """4 significant digits; a learning rate (by its `key`) or a small value in scientific
    notation (`2.372e-02`, `3e-04`); whole numbers as integers; nothing for a missing one."""
    number = as_number(value)
    if number is None:
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return "" if missing else str(value)
    if isinstance(value, str) and not _looks_numeric(value):
        return value
    if number != 0 and (_is_rate(key) or abs(number) < 1e-3):
        mantissa, exponent = f"{number:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
    if number.is_integer() and abs(number) < 1e6:
        return str(int(number))
    return f"{number:.4g}"


def _is_rate(key: str) -> bool:
    return "learning_rate" in key or key.endswith(".lr") or key == "lr"


def _looks_numeric(text: str) -> bool:
    return text.strip().lower() not in ("nan", "inf", "-inf", "infinity", "true", "false")
