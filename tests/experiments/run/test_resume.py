"""Kill a tracked run with SIGKILL mid-training, `harness resume` it: the same MLflow run ends
FINISHED with weights bit-identical to an uninterrupted run and the same metric history."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from experiments.ui.hints import line as hint
from tests.experiments.configs import write_config
from tests.paths import ROOT

# Wall-clock metrics differ between any two runs; everything else must match exactly.
TIMED = {"epoch_time_s", "steps_per_sec"}


def _changes(engine: str, experiment: str, root: Path) -> dict[str, object]:
    return {
        "data": {"name": "digits", "params": {"limit": 610}, "batch_size": 16},
        # 488 examples: 31 batches, so 16 updates an epoch, the last of one micro-batch only.
        "data.validation_split": 0.2,
        "model.params.dropout": 0.2,  # a seed generator in the state
        "schedule": {"name": "cosine", "warmup_steps": 5},
        "ema": {"decay": 0.9},
        "trainer.engine": engine,
        "trainer.epochs": 3,
        "trainer.deterministic": True,
        "trainer.accumulation_steps": 2,
        "trainer.log_every_n_steps": 1,
        "tracking.experiment": experiment,
        "tracking.tensorboard_dir": str(root / "tb"),
        "tracking.system_metrics_every_s": 0,
        "checkpoint.dir": str(root / "ckpt" / "{run_id}"),
        "checkpoint.every_n_steps": 4,
        "callbacks": [
            {
                "class_path": "tests.experiments.user_code:SlowBatches",
                "init_args": {"seconds": 0.02},
            }
        ],
    }


def _history(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
        if key not in TIMED and not key.startswith("system/")
    }


def _final_weights(client: MlflowClient, run_id: str) -> list[np.ndarray]:
    import mlflow

    logged = {
        m.name: m
        for m in client.search_logged_models([client.get_run(run_id).info.experiment_id])
        if m.source_run_id == run_id
    }
    model = mlflow.keras.load_model(f"models:/{logged['model'].model_id}")
    return [np.array(w) for w in model.get_weights()]


def _assert_same_training(client: MlflowClient, resumed: str, uninterrupted: str) -> None:
    """Bit-identical final weights and the same metric history, step for step."""
    for got, want in zip(
        _final_weights(client, resumed), _final_weights(client, uninterrupted), strict=True
    ):
        np.testing.assert_array_equal(got, want)
    assert _history(client, resumed) == _history(client, uninterrupted)


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_a_killed_run_resumes_bit_for_bit_in_the_same_mlflow_run(
    engine: str, in_tmp: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient(mlflow_uri)
    # The uninterrupted reference, in this process.
    reference = write_config(in_tmp, _changes(engine, f"ref-{engine}", in_tmp / "a"), "a.yaml")
    assert main(["run", str(reference), "--tracking-uri", mlflow_uri]) == 0
    (expected_run,) = client.search_runs(
        [client.get_experiment_by_name(f"ref-{engine}").experiment_id]
    )

    # The same config in a child process, its checkpoints slow to write (0.4 s), killed
    # mid-epoch 1 while it writes its fourth (the first is step 0's): the batches since the
    # third are recomputed.
    changes = _changes(engine, f"kill-{engine}", in_tmp / "b")
    changes["callbacks"][0]["init_args"]["write_seconds"] = 0.4  # type: ignore[index]
    config = write_config(in_tmp, changes, "b.yaml")
    child = _start_child(config, mlflow_uri, in_tmp)
    checkpoints = in_tmp / "b" / "ckpt"

    def writing_the_fourth() -> bool:
        return any(checkpoints.glob("*/.tmp-ckpt-000004-*"))

    _wait_for(writing_the_fourth, child, "fourth checkpoint's write")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    (run_dir,) = checkpoints.iterdir()
    written = sorted(path.name for path in run_dir.glob("ckpt-*"))
    assert written == ["ckpt-000002", "ckpt-000003"], written  # the last two kept
    assert any(run_dir.glob(".tmp-ckpt-000004-*"))  # cut mid-write
    experiment = client.get_experiment_by_name(f"kill-{engine}").experiment_id
    (killed,) = client.search_runs([experiment])
    assert killed.info.status == "RUNNING"  # nobody could mark it
    capsys.readouterr()
    assert main(["runs", "--tracking-uri", mlflow_uri, "--experiment", f"kill-{engine}"]) == 0
    out = capsys.readouterr().out
    assert "RUNNING (process gone)" in out
    assert f"harness resume {killed.info.run_id[:8]} --tracking-uri {mlflow_uri}" in out
    # What a kill during the final export leaves: a logged model that stays PENDING.
    client.create_logged_model(experiment, name="model", source_run_id=killed.info.run_id)

    assert main(["resume", killed.info.run_id[:8], "--tracking-uri", mlflow_uri]) == 0  # a prefix
    out = capsys.readouterr().out
    assert f"resuming run {killed.info.run_id[:8]} at optimizer step" in out
    runs = client.search_runs([client.get_experiment_by_name(f"kill-{engine}").experiment_id])
    assert [r.info.run_id for r in runs] == [killed.info.run_id]  # one run, continued
    assert runs[0].info.status == "FINISHED"
    assert "harness.resumed_from" in runs[0].data.tags
    assert "step 8 " in runs[0].data.tags["harness.resumed_from"]  # the third checkpoint
    assert not list(run_dir.glob(".tmp-*"))  # the cut write's debris is gone
    models = client.search_logged_models([experiment])  # the PENDING one removed
    assert sorted((m.name, m.status.value) for m in models) == [
        ("model", "READY"),
        ("model_ema", "READY"),
    ]
    _assert_same_training(client, killed.info.run_id, expected_run.info.run_id)


def _one_line_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("harness:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_finished_run_trains_on_and_resume_refuses_what_it_cannot_continue(
    in_tmp: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    changes = {
        "trainer.epochs": 1,
        "tracking.experiment": "resume-rules",
        "tracking.tensorboard_dir": str(in_tmp / "tb"),
        "checkpoint.dir": str(in_tmp / "ck" / "{run_id}"),
    }
    config = write_config(in_tmp, changes)
    assert main(["run", str(config), "--tracking-uri", mlflow_uri]) == 0
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("resume-rules").experiment_id
    (run,) = client.search_runs([experiment])
    run_id = run.info.run_id
    uri = ["--tracking-uri", mlflow_uri]

    # Finished, nothing changed: nothing to resume, and the run is left as it is.
    capsys.readouterr()
    assert main(["resume", run_id, *uri]) == 0
    assert capsys.readouterr().out == (
        f"run {run_id[:8]} has trained 1 epoch of trainer.epochs=1: nothing left to train, "
        f"nothing changed\n  to train it longer: "
        f"{hint('harness', 'resume', run_id[:8], 'trainer.epochs=N', *uri)}  (N > 1)\n"
    )
    assert len(client.search_logged_models([experiment])) == 1  # no second export

    # Training longer is safe: the same run goes on from its last checkpoint.
    assert main(["resume", run_id, "trainer.epochs=2", *uri]) == 0
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run_id, "epoch")] == [1.0, 2.0]
    assert run.data.tags["harness.resume_changes"] == "trainer.epochs: 1 -> 2"
    assert run.data.tags["harness.epochs_trained"] == "2"  # the param still says 1
    models = client.search_logged_models([experiment])
    assert [m.name for m in models] == ["model"]  # the one from before the resume removed
    assert models[0].source_run_id == run_id
    # Fewer epochs than it trained: said in one line, nothing changed.
    capsys.readouterr()
    assert main(["resume", run_id, "trainer.epochs=1", *uri]) == 0
    assert capsys.readouterr().out == (
        f"run {run_id[:8]} has trained 2 epochs of trainer.epochs=1: nothing left to train, "
        f"nothing changed\n  to train it longer: "
        f"{hint('harness', 'resume', run_id[:8], 'trainer.epochs=N', *uri)}  (N > 2)\n"
    )
    assert [m.value for m in client.get_metric_history(run_id, "epoch")] == [1.0, 2.0]
    assert [m.model_id for m in client.search_logged_models([experiment])] == [models[0].model_id]
    capsys.readouterr()

    line = _one_line_exit_2(["resume", "0123456789abcdef0123456789abcdef", *uri], capsys)
    assert "there is no run '0123456789abcdef0123456789abcdef'" in line
    line = _one_line_exit_2(["resume", run_id, "optimizer.learning_rate=0.5", *uri], capsys)
    assert "cannot continue with other settings: optimizer.learning_rate (0.01 -> 0.5)" in line
    line = _one_line_exit_2(["resume", run_id, "trainer.epochz=3", *uri], capsys)
    assert line.startswith(  # the run's config, not a temporary file the user never wrote
        f"harness: error: run {run_id}'s config.yaml (command-line override): unknown key"
    )
    changed = write_config(in_tmp, {**changes, "data.batch_size": 16}, "changed.yaml")
    line = _one_line_exit_2(["run", str(changed), "--resume", run_id, *uri], capsys)
    assert "data.batch_size (32 -> 16)" in line
    for checkpoint in (in_tmp / "ck" / run_id).glob("ckpt-*"):
        (checkpoint / "state.bin").write_bytes(b"torn")
    line = _one_line_exit_2(["resume", run_id, "trainer.epochs=3", *uri], capsys)
    assert "no intact checkpoint" in line and "does not match its checksum" in line
    shutil.rmtree(in_tmp / "ck" / run_id)
    line = _one_line_exit_2(["resume", run_id, "trainer.epochs=3", *uri], capsys)
    assert f"the checkpoints of run '{run_id}' are missing" in line
    assert len(client.search_runs([experiment])) == 1


def _start_child(config: Path, uri: str, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", "run", str(config), "--tracking-uri", uri],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(condition: object, child: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 240
    while not condition():  # type: ignore[operator]
        assert child.poll() is None, child.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"no {what} within 4 minutes"
        time.sleep(0.02)


def test_sigterm_saves_marks_killed_and_resumes_and_a_run_killed_before_training_resumes_too(
    in_tmp: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient(mlflow_uri)
    reference = write_config(in_tmp, _changes("custom", "term-ref", in_tmp / "a"), "a.yaml")
    assert main(["run", str(reference), "--tracking-uri", mlflow_uri]) == 0
    (expected,) = client.search_runs([client.get_experiment_by_name("term-ref").experiment_id])

    # SIGTERM (preemption, docker stop): a checkpoint at the next update boundary, then KILLED.
    changes = {**_changes("custom", "term", in_tmp / "b"), "checkpoint.every_n_steps": None}
    config = write_config(in_tmp, changes, "b.yaml")
    child = _start_child(config, mlflow_uri, in_tmp)
    saved = (in_tmp / "b" / "ckpt").glob
    _wait_for(lambda: len(list(saved("*/ckpt-*"))) == 2, child, "epoch 1's checkpoint")
    time.sleep(0.2)  # mid-epoch 2: the checkpoints so far are step 0's and epoch 1's end
    (running,) = client.search_runs([client.get_experiment_by_name("term").experiment_id])
    line = _one_line_exit_2(["resume", running.info.run_id, "--tracking-uri", mlflow_uri], capsys)
    assert f"run '{running.info.run_id}' is still running (process {child.pid} on" in line
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) != 0
    (run,) = client.search_runs([client.get_experiment_by_name("term").experiment_id])
    assert run.info.status == "KILLED"
    checkpoints = sorted((in_tmp / "b" / "ckpt" / run.info.run_id).glob("ckpt-*"))
    assert len(checkpoints) == 2  # epoch 1's end, and the one the SIGTERM made
    assert main(["resume", run.info.run_id, "--tracking-uri", mlflow_uri]) == 0
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    _assert_same_training(client, run.info.run_id, expected.info.run_id)
    capsys.readouterr()

    # Killed before its first checkpoint: it starts from the beginning, in the same run.
    early = write_config(in_tmp, {**changes, "tracking.experiment": "early"}, "c.yaml")
    child = _start_child(early, mlflow_uri, in_tmp)

    def training_begins() -> bool:  # the checkpoint directory is tagged just before
        experiment = client.get_experiment_by_name("early")
        runs = [] if experiment is None else client.search_runs([experiment.experiment_id])
        return bool(runs) and "harness.checkpoint_dir" in runs[0].data.tags

    _wait_for(training_begins, child, "MLflow run")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    (run,) = client.search_runs([client.get_experiment_by_name("early").experiment_id])
    assert run.info.status == "RUNNING"
    for saved_at_step_0 in (in_tmp / "b" / "ckpt" / run.info.run_id).glob("ckpt-*"):
        shutil.rmtree(saved_at_step_0)  # as if killed a moment earlier, before it was written
    assert main(["resume", run.info.run_id, "--tracking-uri", mlflow_uri]) == 0
    out = capsys.readouterr().out
    assert f"resuming run {run.info.run_id[:8]} from the beginning" in out
    (resumed,) = client.search_runs([client.get_experiment_by_name("early").experiment_id])
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert resumed.data.tags["harness.resumed_from"].startswith("the beginning")
    _assert_same_training(client, run.info.run_id, expected.info.run_id)


def test_a_mirrored_checkpoint_resumes_where_the_checkpoint_directory_is_gone(
    in_tmp: Path, mlflow_uri: str
) -> None:
    import shutil

    changes = {
        "trainer.epochs": 1,
        "tracking.experiment": "mirror",
        "tracking.tensorboard_dir": str(in_tmp / "tb"),
        "checkpoint.dir": str(in_tmp / "elsewhere" / "{run_id}"),
        "checkpoint.mirror_to_mlflow": True,
    }
    assert main(["run", str(write_config(in_tmp, changes)), "--tracking-uri", mlflow_uri]) == 0
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("mirror").experiment_id
    (run,) = client.search_runs([experiment])
    run_id = run.info.run_id
    mirrored = {a.path for a in client.list_artifacts(run_id, "checkpoint/latest")}
    assert mirrored == {"checkpoint/latest/manifest.json", "checkpoint/latest/state.bin"}
    shutil.rmtree(in_tmp / "elsewhere")  # another machine: only the MLflow server is shared
    assert main(["resume", run_id, "trainer.epochs=2", "--tracking-uri", mlflow_uri]) == 0
    assert [m.value for m in client.get_metric_history(run_id, "epoch")] == [1.0, 2.0]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert any((in_tmp / "elsewhere" / run_id).glob("ckpt-*"))  # downloaded, then trained on
