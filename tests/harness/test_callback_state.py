"""Callbacks' saved state: keyed by a stable key, so a resumed run may add, drop or reorder
callbacks; Keras's stateful callbacks by type; a warning names what cannot be saved."""

from __future__ import annotations

import warnings
from typing import Any

import keras
import pytest

from harness.state import CallbackStates


class Counter(keras.callbacks.Callback):
    def __init__(self, count: int = 0, key: str | None = None) -> None:
        super().__init__()
        self.count = count
        if key is not None:
            self.state_key = key

    def state(self) -> dict[str, int]:
        return {"count": self.count}

    def restore(self, state: dict[str, int]) -> None:
        self.count = state["count"]


class Quiet(keras.callbacks.Callback):
    stateless = True


class Unknown(keras.callbacks.Callback):
    pass


def _early(wait: int) -> keras.callbacks.EarlyStopping:
    callback = keras.callbacks.EarlyStopping(patience=5)
    callback.wait, callback.best = wait, 0.5 + wait
    return callback


def test_states_are_keyed_by_class_name_and_order_among_equals() -> None:
    callbacks: list[Any] = [Counter(1), _early(2), Counter(3), Counter(4, key="mine"), Quiet()]
    state = CallbackStates(lambda: callbacks).state()
    assert set(state) == {"Counter", "EarlyStopping", "Counter#1", "mine"}
    assert state["Counter#1"] == {"count": 3} and state["mine"] == {"count": 4}
    assert state["EarlyStopping"]["wait"] == 2  # Keras's counters, by the callback's type


def test_a_resumed_run_may_reorder_add_and_drop_callbacks() -> None:
    saved = CallbackStates(lambda: [Counter(1), _early(2), Counter(3)]).state()
    early, first, second, added = _early(0), Counter(), Counter(), Counter(9, key="added")
    with pytest.warns(UserWarning, match=r"\['added'\] start afresh"):
        CallbackStates(lambda: [early, first, added, second]).restore(saved)
    assert (first.count, second.count, added.count) == (1, 3, 9)
    assert (early.wait, early.best) == (2, 2.5)
    with pytest.warns(UserWarning, match=r"the saved state of \['EarlyStopping', 'Counter#1'\] is"):
        CallbackStates(lambda: [Counter()]).restore(saved)


def test_an_older_checkpoint_s_list_of_states_restores_in_order() -> None:
    first, second, early = Counter(), Counter(), _early(0)
    saved = [("Counter", {"count": 5}), ("EarlyStopping", {"wait": 3}), ("Counter", {"count": 6})]
    CallbackStates(lambda: [first, early, second]).restore(saved)
    assert (first.count, early.wait, second.count) == (5, 3, 6)
    with pytest.raises(ValueError, match="Resume with the same callbacks in the same order"):
        CallbackStates(lambda: [first, second, early]).restore(saved)


def test_only_callbacks_that_cannot_be_saved_are_warned_about_once() -> None:
    callbacks = [Unknown(), Quiet(), keras.callbacks.TerminateOnNaN(), Counter()]
    states = CallbackStates(lambda: callbacks)
    assert states.unsaved == ["Unknown"]
    with pytest.warns(UserWarning, match=r"the state of callbacks \['Unknown'\] cannot be saved"):
        states.state()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        states.state()  # once only
