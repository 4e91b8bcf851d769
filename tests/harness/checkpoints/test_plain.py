"""Checkpoints hold plain data only: loading one runs no code, and what is not plain data is
refused with its place named."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from harness.checkpoints import (
    CheckpointStore,
    DamagedCheckpoint,
    NotPlainData,
    PickledCheckpoint,
    plain,
)
from harness.checkpoints import format as checkpoint_format

STATE = {
    "model": [np.arange(6, dtype="float32").reshape(2, 3), np.array(True), np.int64(7)],
    "random": {
        "python": (3, tuple(range(5)), None),
        "numpy": ("MT19937", np.arange(4, dtype="uint32"), 2, 0, 0.0),
    },
    "callbacks": {
        "EarlyStopping": {"best": float("inf"), "wait": 2, "best_weights": None},
        "History": {"history": {"loss": [np.float32(0.5), 0.25]}, "epoch": [0, 1]},
        "Plateau": {"best": float("-inf"), "nan": float("nan")},
    },
    "data": {"iterator": {"ckpt": b"\x00\x01tf-iterator-state"}, "hooks": ["begin"]},
    "odd keys": {"__array__": 3, "__tuple__": [1]},  # a user's dict that looks like a marker
    "empty": np.zeros((0, 4), "float16"),
}


def test_every_kind_of_plain_data_comes_back_as_it_was(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    path = store.save(STATE, step=1, epoch=0, batch=1)
    store.wait()
    _, state = store.load(path)
    np.testing.assert_array_equal(state["model"][0], STATE["model"][0])
    assert state["model"][0].dtype == np.float32 and state["model"][0].flags.writeable
    assert state["model"][1].dtype == bool and state["model"][1].shape == ()
    assert state["model"][2] == 7
    assert state["random"]["python"] == (3, (0, 1, 2, 3, 4), None)
    numpy_state = state["random"]["numpy"]
    assert isinstance(numpy_state, tuple) and numpy_state[1].dtype == np.uint32
    callbacks = state["callbacks"]
    assert callbacks["EarlyStopping"] == {"best": float("inf"), "wait": 2, "best_weights": None}
    assert callbacks["History"]["history"] == {"loss": [0.5, 0.25]}
    assert callbacks["Plateau"]["best"] == float("-inf") and np.isnan(callbacks["Plateau"]["nan"])
    assert state["data"] == {"iterator": {"ckpt": b"\x00\x01tf-iterator-state"}, "hooks": ["begin"]}
    assert state["odd keys"] == {"__array__": 3, "__tuple__": [1]}
    assert state["empty"].shape == (0, 4) and state["empty"].dtype == np.float16


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("state", "place"),
    [
        ({"callbacks": {"Mine": {"thing": _Opaque()}}}, "state.callbacks.Mine.thing is _Opaque"),
        ({"callbacks": {"Mine": [1, {2: "x"}]}}, "state.callbacks.Mine[1] has a key 2"),
        ({"x": np.array([object()])}, "state.x is an array of object"),
        ({"x": {1.5j: 1}}, "state.x has a key 1.5j"),
    ],
)
def test_what_is_not_plain_data_is_refused_with_its_place(state: object, place: str) -> None:
    with pytest.raises(NotPlainData, match=place.replace("[", r"\[").replace("]", r"\]")):
        plain.check(state)
    with pytest.raises(NotPlainData):
        plain.encode(state)


class _RunsCode:
    """What a planted pickle could do: here, write a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.path}",))


def _plant(directory: Path, *, fmt: int, payload: bytes, name: str) -> None:
    """A checkpoint whose manifest and checksum match its (planted) state file."""
    directory.mkdir(parents=True)
    (directory / name).write_bytes(payload)
    manifest = {
        "format": fmt, "sequence": 1, "step": 1, "epoch": 0, "batch": 1, "epoch_end": False,
        "monitor": None, "metrics": {}, "permanent": False, "saved_at": 0.0, "metadata": {},
        "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload),
    }  # fmt: skip
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_a_planted_pickle_is_never_loaded(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    payload = pickle.dumps({"model": _RunsCode(str(pwned))})
    _plant(tmp_path / "run" / "ckpt-000001", fmt=1, payload=payload, name="state.pkl")
    with pytest.raises(PickledCheckpoint, match="predates keras-harness's safe checkpoint format"):
        CheckpointStore(tmp_path / "run").load_latest()
    assert not pwned.exists()


def test_a_header_that_names_objects_is_refused(tmp_path: Path) -> None:
    header = json.dumps(
        {"tree": {"__array__": 0}, "arrays": [{"dtype": "|O", "shape": [1], "offset": 0}]}
    ).encode()
    payload = checkpoint_format.MAGIC + struct.pack("<Q", len(header)) + header + bytes(8)
    _plant(tmp_path / "run" / "ckpt-000001", fmt=2, payload=payload, name="state.bin")
    with pytest.raises(DamagedCheckpoint, match="an array of \\|O is not plain data"):
        CheckpointStore(tmp_path / "run").load_latest()
