"""A run's state as plain data: a JSON structure and raw arrays, which cannot run code.

A pickle runs whatever its bytes say when it is loaded, so a checkpoint someone else could
write (a run's artifacts on an `mlflow server`, a shared disk) would run their code on every
machine that resumes it. Here the structure is JSON and the arrays are raw bytes read back by
dtype and shape, so loading runs nothing.

What a state may hold, anywhere in it: None, bools, ints, floats (NaN and infinities too),
strings, bytes, lists, tuples, dicts with string keys, NumPy arrays and scalars of numbers or
bools, and tensors (read as arrays). Anything else is `NotPlainData`, named with its place.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["NotPlainData", "check", "decode", "encode"]

_KINDS = "biufc"  # bool, signed, unsigned, float, complex: what an array may hold


class NotPlainData(ValueError):
    """A state that holds something other than plain data; the message names where."""


def encode(tree: Any, *, where: str = "state") -> tuple[Any, list[np.ndarray]]:
    """`tree` as a JSON-ready structure and the arrays it refers to (by position).

    Raises:
        NotPlainData: something in `tree` is not plain data; the message gives its place.
    """
    arrays: list[np.ndarray] = []
    return _encode(tree, arrays, where), arrays


def check(tree: Any, *, where: str = "state") -> None:
    """Raise `NotPlainData` where `tree` holds something else; reads no tensor's value (on
    the training thread, with the state's tensors not yet copied out)."""
    _encode(tree, [], where, read=False)


def decode(structure: Any, arrays: list[np.ndarray]) -> Any:
    """What `encode` was given, from its structure (as JSON read it back) and arrays."""
    return _decode(structure, arrays)


def _encode(value: Any, arrays: list[np.ndarray], where: str, *, read: bool = True) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, np.generic) and value.dtype.kind in _KINDS:
        return _encode(value.item(), arrays, where, read=read)
    if isinstance(value, bytes):
        arrays.append(np.frombuffer(value, np.uint8))
        return {"__bytes__": len(arrays) - 1}
    if isinstance(value, list | tuple):
        listed = [_encode(item, arrays, f"{where}[{i}]", read=read) for i, item in enumerate(value)]
        return listed if isinstance(value, list) else {"__tuple__": listed}
    if isinstance(value, dict):
        bad = [key for key in value if not isinstance(key, str)]
        if bad:
            raise NotPlainData(f"{where} has a key {bad[0]!r} that is not a string")
        items = {
            key: _encode(item, arrays, f"{where}.{key}", read=read) for key, item in value.items()
        }
        marked = any(key.startswith("__") and key.endswith("__") for key in value)
        return {"__dict__": items} if marked else items
    array = _as_array(value, read=read)
    if array is None or array.dtype.kind not in _KINDS:
        shown = type(value).__name__ if array is None else f"an array of {array.dtype}"
        raise NotPlainData(
            f"{where} is {shown}: a checkpoint holds only plain data (numbers, strings, bytes, "
            "lists, dicts and NumPy arrays of numbers)"
        )
    arrays.append(array)
    return {"__array__": len(arrays) - 1}


def _as_array(value: Any, *, read: bool) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy") and hasattr(value, "dtype"):  # a tensor
        if read:
            return np.asarray(value.numpy())
        return np.empty(0, getattr(value.dtype, "as_numpy_dtype", np.float32))
    return None


def _decode(value: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(value, list):
        return [_decode(item, arrays) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, inner),) = value.items()
        if key == "__array__":
            return arrays[inner]
        if key == "__bytes__":
            return arrays[inner].tobytes()
        if key == "__tuple__":
            return tuple(_decode(item, arrays) for item in inner)
        if key == "__float__":
            return float(inner)
        if key == "__dict__":
            return {k: _decode(item, arrays) for k, item in inner.items()}
    return {key: _decode(item, arrays) for key, item in value.items()}


def checked_dtype(name: str) -> np.dtype:
    """The dtype an array's header names, if it is one of plain numbers (never objects).

    Raises:
        ValueError: any other dtype.
    """
    dtype = np.dtype(name)
    if dtype.kind not in _KINDS or dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"an array of {name} is not plain data")
    return dtype
