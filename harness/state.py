"""One registry of savable state: every stateful part of a run registers with the loop.

`StateRegistry.capture()` returns plain Python and NumPy values (picklable, no TensorFlow
objects), and `restore()` puts them back, part by part in registration order, so a checkpoint
is one call and a run continues bit for bit in a fresh process.

Example:
    >>> state = loop.capture_state()          # {"model": [...], "optimizer": [...], ...}
    >>> fresh_loop.restore_state(state)       # applied when fresh_loop.run() starts
"""

from __future__ import annotations

import functools
import random
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from harness import keras_internals


def read(variable: Any) -> Any:
    """A consistent read of a variable's value as a tensor, not yet copied out.

    Tensor values are immutable: later updates of the variable do not change it (TensorFlow
    copies the buffer on write while the read is alive), so the training thread can take
    this snapshot in microseconds and a writer thread turn it into NumPy (`materialize`).
    """
    import tensorflow as tf

    return tf.identity(getattr(variable, "value", variable))


def materialize(tree: Any) -> Any:
    """`tree` with every tensor (from `snapshot()`s) turned into NumPy; the rest as it is."""
    if isinstance(tree, dict):
        return {key: materialize(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple) and not hasattr(tree, "_fields"):
        return type(tree)(materialize(value) for value in tree)
    if hasattr(tree, "numpy") and not isinstance(tree, np.ndarray | np.generic):
        return np.asarray(tree.numpy())
    return tree


class Parts:
    """The names the loop registers its state parts under: the keys of a captured state (and
    so of a checkpoint's), in the order they are restored."""

    MODEL = "model"  # the model's variables, seed generators' states included
    METRICS = "metrics"  # the compiled metrics' accumulators
    OPTIMIZER = "optimizer"  # slots and `iterations`
    DATA = "data"  # the position in the data; restored before the generators
    RANDOM = "random"  # Python's, NumPy's, Keras's and TensorFlow's global generators
    GRADIENTS = "gradients"  # the gradient pipeline's counters and partial sums
    EMA = "ema"  # the averaged weights, with `ema:` only
    CALLBACKS = "callbacks"  # by each callback's state key
    LOOP = "loop"  # the epoch in progress


class Stateful(Protocol):
    """Anything whose state the registry saves: `state()` out, `restore(state)` back in."""

    def state(self) -> Any: ...

    def restore(self, state: Any) -> None: ...


class StateRegistry:
    """Named stateful parts, captured and restored together."""

    def __init__(self) -> None:
        self._parts: dict[str, Stateful] = {}

    def register(self, name: str, part: Stateful) -> None:
        """Add `part` under `name`; restored after the parts registered before it."""
        if name in self._parts:
            raise ValueError(f"a state part named {name!r} is already registered")
        self._parts[name] = part

    @property
    def names(self) -> list[str]:
        return list(self._parts)

    def capture(self, *, snapshot: bool = False) -> dict[str, Any]:
        """Every part's state, by name.

        `snapshot`: parts that have a `snapshot()` (variables, EMA shadows, accumulators) give
        tensors read now instead of NumPy copies; `materialize()` the result later, off the
        training thread.
        """
        return {
            name: part.snapshot() if snapshot and hasattr(part, "snapshot") else part.state()
            for name, part in self._parts.items()
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Restore every registered part from `state` (which must hold all of them)."""
        missing = [name for name in self._parts if name not in state]
        if missing:
            raise ValueError(
                f"the saved state has no {', '.join(missing)}; it holds {sorted(state)}. "
                "Restore a state captured from a run with the same features"
            )
        for name, part in self._parts.items():
            part.restore(state[name])


class VariablesState:
    """The values of a list of Keras/TF variables (weights, seed generators, optimizer slots)."""

    def __init__(self, what: str, variables: Callable[[], Sequence[Any]]) -> None:
        self._what = what
        self._variables = variables

    def state(self) -> list[np.ndarray]:
        return [np.array(v.numpy(), copy=True) for v in self._variables()]

    def snapshot(self) -> list[Any]:
        return [read(v) for v in self._variables()]

    def restore(self, state: list[np.ndarray]) -> None:
        variables = list(self._variables())
        if len(variables) != len(state):
            raise ValueError(
                f"the saved {self._what} state has {len(state)} variables; this run has "
                f"{len(variables)}. Restore into the same model, optimizer and metrics"
            )
        for variable, value in zip(variables, state, strict=True):
            if tuple(variable.shape) != tuple(np.shape(value)):
                raise ValueError(
                    f"{self._what} variable {variable.path} has shape {tuple(variable.shape)}; "
                    f"the saved value has shape {np.shape(value)}"
                )
            variable.assign(value)


class RandomState:
    """Python's, NumPy's, TensorFlow's global and Keras's global random generators."""

    def state(self) -> dict[str, Any]:
        generator = keras_internals.tf_global_generator()
        return {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "keras": keras_internals.global_seed_state(),
            "tensorflow": None if generator is None else generator.state.numpy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        import tensorflow as tf

        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        keras_internals.set_global_seed_state(state["keras"])
        if state["tensorflow"] is not None:
            generator = keras_internals.tf_global_generator()
            if generator is None:
                generator = tf.random.Generator.from_seed(0)
                tf.random.set_global_generator(generator)
            generator.state.assign(state["tensorflow"])


class CallbackStates:
    """The state of each callback that has one, keyed by its `state_key`.

    Saved: ours and a user's callbacks with `state()` / `restore()`, and the counters of Keras's
    `EarlyStopping`, `ReduceLROnPlateau` and `History`. A callback with nothing to save says
    so with a class attribute `stateless = True` (Keras's own stateless callbacks are known by
    type). Any other callback is named in `unsaved`, and a warning says so once, at the first
    capture.

    A callback's key is its `state_key` attribute if it has one, else its class's qualified
    name, followed by `#1`, `#2`, ... for the second, third, ... of equal names (as
    Lightning keys callbacks' states): a resumed run may add, drop or reorder callbacks, and
    each finds its own state.
    """

    def __init__(self, callbacks: Callable[[], Iterable[Any]]) -> None:
        self._callbacks = callbacks
        self._warned = False

    @property
    def unsaved(self) -> list[str]:
        """Class names of callbacks with state that a capture does not hold."""
        return [
            type(cb).__name__
            for cb in self._callbacks()
            if _saver(cb) is None and not _stateless(cb)
        ]

    def state(self) -> dict[str, Any]:
        unsaved = self.unsaved
        if unsaved and not self._warned:
            self._warned = True
            warnings.warn(
                f"the state of callbacks {unsaved} cannot be saved (they have no "
                "`state()`/`restore()` methods; set `stateless = True` on a callback with "
                "nothing to save): a resumed run starts them afresh",
                stacklevel=5,  # state, capture's comprehension, capture, capture_state, caller
            )
        saved = {}
        for key, callback in _keyed(self._callbacks()).items():
            saver = _saver(callback)
            if saver is not None:
                saved[key] = saver[0]()
        return saved

    def restore(self, state: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> None:
        if not isinstance(state, Mapping):  # an older checkpoint: (class name, state) in order
            _restore_in_order(list(self._callbacks()), state)
            return
        callbacks = _keyed(self._callbacks())
        for key, callback in callbacks.items():
            saver = _saver(callback)
            if saver is not None and state.get(key) is not None:
                saver[1](state[key])
        fresh = [k for k, cb in callbacks.items() if _saver(cb) is not None and k not in state]
        orphaned = [key for key, value in state.items() if key not in callbacks and value]
        if fresh or orphaned:
            warnings.warn(
                "resuming with other callbacks than were saved: "
                + "; ".join(
                    part
                    for part in (
                        f"{fresh} start afresh" if fresh else "",
                        f"the saved state of {orphaned} is not used" if orphaned else "",
                    )
                    if part
                ),
                stacklevel=4,
            )


def _keyed(callbacks: Iterable[Any]) -> dict[str, Any]:
    """Callbacks by `state_key`: their own, or their class's qualified name (`#n` for the
    n-th further callback with the same name)."""
    keyed: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for callback in callbacks:
        name = str(getattr(callback, "state_key", None) or type(callback).__qualname__)
        count = seen[name] = seen.get(name, -1) + 1
        keyed[name if count == 0 else f"{name}#{count}"] = callback
    return keyed


def _restore_in_order(callbacks: list[Any], saved: Sequence[tuple[str, Any]]) -> None:
    """What checkpoints before state keys held: each callback's class name and state, in the
    callbacks' order, which must be the same."""
    names = [type(cb).__name__ for cb in callbacks]
    if names != [name for name, _ in saved]:
        raise ValueError(
            f"the saved callback states are for {[name for name, _ in saved]}; this run has "
            f"{names}. Resume with the same callbacks in the same order"
        )
    for callback, (_, value) in zip(callbacks, saved, strict=True):
        saver = _saver(callback)
        if saver is not None and value is not None:
            saver[1](value)


@functools.cache
def _keras_callback_attributes() -> dict[type, tuple[str, ...]]:
    """The counters of Keras's own stateful callbacks that a resumed run needs."""
    import keras

    return {
        keras.callbacks.History: ("epoch", "history"),
        keras.callbacks.EarlyStopping: (
            "wait", "stopped_epoch", "best", "best_weights", "best_epoch",
        ),
        keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
    }  # fmt: skip


def _stateless(callback: Any) -> bool:
    """Keras's callbacks with nothing to save between steps, and any that says so."""
    import keras

    known = (
        keras.callbacks.TerminateOnNaN,
        keras.callbacks.LambdaCallback,
        keras.callbacks.ProgbarLogger,
        keras.callbacks.BackupAndRestore,  # saves its own files
    )
    return isinstance(callback, known) or bool(getattr(callback, "stateless", False))


def _saver(callback: Any) -> tuple[Callable[[], Any], Callable[[Any], None]] | None:
    if callable(getattr(callback, "state", None)) and callable(getattr(callback, "restore", None)):
        return callback.state, callback.restore
    attributes = _keras_callback_attributes().get(type(callback))
    if attributes is None:
        return None

    def read() -> dict[str, Any]:
        import copy

        return {name: copy.deepcopy(getattr(callback, name, None)) for name in attributes}

    def write(values: dict[str, Any]) -> None:
        for name, value in values.items():
            setattr(callback, name, value)

    return read, write
