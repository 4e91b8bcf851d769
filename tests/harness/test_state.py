"""One registry of savable state: capture in memory, restore anywhere, continue bit for bit."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import TrainingInterrupted
from tests.harness.problems import weights
from tests.harness.state_problem import EPOCHS, build_loop
from tests.paths import ROOT


@pytest.fixture(scope="module", autouse=True)
def deterministic_ops() -> None:
    # Bit for bit needs deterministic kernels on both sides; the fresh process enables them too.
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_a_captured_state_continues_bit_for_bit_here_and_in_a_fresh_process(
    engine: str, tmp_path: Path
) -> None:
    uninterrupted = build_loop(engine)
    expected_history = uninterrupted.run().history
    expected = weights(uninterrupted.model)

    loop = build_loop(engine, stop_at=(1, 4))  # mid-epoch: batch 4 of 10 in epoch 1
    with pytest.raises(TrainingInterrupted, match="test stop"):
        loop.run()
    assert int(loop.model.optimizer.iterations) == 15
    state = loop.capture_state()
    assert set(state) == {
        "model",
        "metrics",
        "optimizer",
        "data",
        "random",
        "callbacks",
        "loop",
        "gradients",
    }
    state_file = tmp_path / "state.pkl"
    state_file.write_bytes(pickle.dumps(state))

    # Run on in this process.
    loop.stop.clear()
    loop.restore_state(pickle.loads(state_file.read_bytes()))
    history = loop.run().history
    for got, want in zip(weights(loop.model), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert history == expected_history

    # Run on in a fresh process.
    out = tmp_path / "fresh.npz"
    done = subprocess.run(
        [sys.executable, "-m", "tests.harness.state_problem", engine, str(state_file), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = np.load(out)
    for index, want in enumerate(expected):
        np.testing.assert_array_equal(fresh[f"arr_{index}"], want)
    assert json.loads(out.with_suffix(".json").read_text()) == expected_history
    assert len(expected_history["loss"]) == EPOCHS


def test_restoring_into_a_different_model_says_what_differs() -> None:
    state = build_loop("fit").capture_state()
    state["model"][0] = np.zeros((64, 32), "float32")  # saved from a wider first layer
    loop = build_loop("fit")
    loop.restore_state(state)
    with pytest.raises(
        ValueError, match=r"model variable .*kernel has shape \(64, 16\); the saved"
    ):
        loop.run()


def test_a_state_without_a_registered_part_is_refused() -> None:
    loop = build_loop("custom")
    state = loop.capture_state()
    del state["data"]
    loop.restore_state(state)
    with pytest.raises(ValueError, match="the saved state has no data"):
        loop.run()
