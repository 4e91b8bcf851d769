"""`python -m benchmarks.gpu_check`: one line and exit 0 without a GPU; its measurements (the
part that does not need one) run on this CPU, in a fresh process as on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check
from tests.paths import ROOT


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no nvidia-smi on it
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--output", str(tmp_path / "t.md")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "gpu_check: no NVIDIA GPU on this machine (nvidia-smi lists none): nothing to check"
    ]
    assert not (tmp_path / "t.md").exists()


@pytest.mark.parametrize(
    "spec",
    [
        {"model": "resnet", "engine": "custom", "precision": "mixed_float16", "batch_size": 32},
        {"model": "cnn", "engine": "fit", "jit": True},
    ],
    ids=["resnet-mixed", "cnn-jit"],
)
def test_a_measurement_trains_and_reads_back_what_the_table_shows(spec: dict) -> None:  # type: ignore[type-arg]
    result = gpu_check.measure({**spec, "epochs": 1, "steps": 2})
    assert result["steps_per_sec"] > 0 and result["first_epoch_s"] > 0
    assert result["loss"] == result["loss"]  # not NaN
    assert (result["loss_scale"] is not None) == (spec.get("precision") == "mixed_float16")
    assert result["replicas"] == 1 and "CPU" in result["weights_on"]


def test_mirrored_in_a_fresh_process_trains_two_replicas() -> None:
    # A fresh process, as the check runs it: TensorFlow's collectives of an earlier
    # MirroredStrategy over the same devices in one process would clash with this one's.
    spec = {"model": "cnn", "engine": "custom", "devices": ["CPU:0", "CPU:1"], "epochs": 1,
            "steps": 2}  # fmt: skip
    (result,) = gpu_check.in_fresh_process([spec], visible="")
    assert "error" not in result, result
    assert result["replicas"] == 2 and result["loss"] == result["loss"]


def test_a_tracked_measurement_in_a_fresh_process_logs_every_step(tmp_path: Path) -> None:
    spec = {"model": "mlp", "engine": "custom", "tracked": True, "root": str(tmp_path),
            "epochs": 1, "steps": 5}  # fmt: skip
    result, failed = gpu_check.in_fresh_process([spec, {"model": "nope"}], visible="")
    assert "error" not in result, result
    assert result["gpus"] == [] and result["steps_per_sec"] > 0
    assert failed == {"error": "KeyError: 'engine'"}  # one failure; the others still measured

    from tracking.mlflow import MlflowRuns

    runs = MlflowRuns(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = runs.search_runs([runs.experiment_id("overhead")])
    steps = [m.step for m in runs.metric_history(run.info.run_id, "step/batch_loss")]
    assert steps == list(range(1, 11))  # 2 epochs of 5 updates, every one logged
    assert json.loads(json.dumps(result)) == result  # what the parent reads is plain JSON


def test_the_table_marks_failures_and_quotes_cleanly() -> None:
    text = gpu_check.table([["speed", "cnn fit gpu", "12 steps/s | 3", "ok"],
                            ["search", "trial 0", "exit 1", "FAIL"]], "NVIDIA H100")  # fmt: skip
    lines = text.splitlines()
    assert lines[0].startswith("GPU check on NVIDIA H100, ")
    assert lines[4] == "| speed | cnn fit gpu | 12 steps/s / 3 | ok |"
    assert lines[5] == "| search | trial 0 | exit 1 | FAIL |"
