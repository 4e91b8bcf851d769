"""Real processes: SIGTERM ends a run KILLED; a real `mlflow server`; `harness runs`."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from experiments.cli import main
from experiments.config.loader import load_config
from experiments.run.run import run_experiment
from tests.experiments.configs import write_config
from tests.paths import ROOT


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_sigterm_marks_the_run_killed_and_exits_130(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    config = write_config(
        tmp_path,
        {
            "trainer.epochs": 50,
            "callbacks": [{"class_path": "tests.experiments.slow_callback.SlowDown"}],
        },
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    harness = Path(sys.executable).with_name("harness")
    proc = subprocess.Popen(
        [str(harness), "run", str(config), "--tracking-uri", uri],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / "mlflow.db"

    def running_run_id() -> str | None:
        # Read the store read-only: a client would create MLflow's tables itself and race the
        # harness's own initialisation of the same fresh database.
        if not db.exists():
            return None
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as conn:
                row = conn.execute(
                    "SELECT r.run_uuid FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid"
                    " WHERE r.status = 'RUNNING' AND m.key = 'step/batch_loss' LIMIT 1"
                ).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    try:
        try:
            run_id = _wait_for(running_run_id, 120, "a RUNNING run with step metrics")
        except AssertionError as timeout:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"{timeout}; harness exited {proc.returncode}:\n{err}") from None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root}/server.db",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return requests.get(f"{url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        _wait_for(healthy, 90, "mlflow server /health")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_tensorflow_cpp_log_lines_stay_off_the_terminal_unless_verbose(tmp_path: Path) -> None:
    """`harness run` on this GPU-less machine: no `I0000 ... oneDNN`, `E0000 ... cuInit` or
    `E0000 ... NodeDef mentions attribute` lines (the fit engine's final predict rewrites a
    tf.data graph and logged the last one); `--verbose` brings TensorFlow's lines back."""
    harness = Path(sys.executable).with_name("harness")
    config = ROOT / "experiments" / "configs" / "digits_mlp.yaml"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    cpp_line = re.compile(r"^[IWEF]\d{4} ", re.MULTILINE)
    done = subprocess.run(
        [str(harness), "run", str(config), "trainer.epochs=1"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not cpp_line.search(done.stderr), done.stderr
    assert "run " in done.stdout and "finished" in done.stdout
    verbose = subprocess.run(
        [str(harness), "run", str(config), "trainer.epochs=1", "--verbose"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )  # fmt: skip
    assert verbose.returncode == 0, verbose.stderr
    assert cpp_line.search(verbose.stderr), verbose.stderr


def test_run_against_a_real_mlflow_server(in_tmp: Path, mlflow_server: str) -> None:
    config = load_config(
        write_config(in_tmp, {"trainer.engine": "custom", "tracking.experiment": "server"})
    )
    result = run_experiment(config, tracking_uri=mlflow_server)
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    logged = client.get_metric_history(result.run_id, "val_loss")
    assert [m.value for m in logged] == pytest.approx(result.history["val_loss"])
    assert {"config.yaml", "history.csv"} <= {a.path for a in client.list_artifacts(result.run_id)}
    # The logged model's files went through the server's artifact proxy too.
    (output,) = run.outputs.model_outputs
    files = {a.path for a in client.list_logged_model_artifacts(output.model_id)}
    assert {"MLmodel", "data"} <= files
    assert result.run_url == (
        f"{mlflow_server}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
        "?workflowType=machine_learning"
    )


def test_runs_table_lists_runs_with_params_and_final_metrics(
    monkeypatch: pytest.MonkeyPatch,
    in_tmp: Path,
    mlflow_uri: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = load_config(
        write_config(in_tmp, {"tracking.experiment": "table", "tracking.run_name": "tabled"})
    )
    result = run_experiment(config, tracking_uri=mlflow_uri)
    import mlflow

    changes: list[str] = []  # MLflow's global URI must not change, not even for a moment
    monkeypatch.setattr(mlflow, "set_tracking_uri", changes.append)
    monkeypatch.setenv("COLUMNS", "200")
    code = main(["runs", "--tracking-uri", mlflow_uri, "--experiment", "table"])
    assert code == 0
    assert changes == []
    printed = capsys.readouterr().out
    header = printed.splitlines()[0]
    assert header.split()[:4] == ["run", "name", "status", "val_loss"]  # the main metric first
    assert f"*{result.run_id[:8]}" in printed and "tabled" in printed  # the best row marked
    assert "learning_rate" in header.split()  # one run: the main params, names shortened
    assert "trainer.epochs" not in header and "epoch_time_s" not in header
    assert "* best by val_loss (lowest)" in printed
    assert main(["runs", "--tracking-uri", mlflow_uri, "--experiment", "table", "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "epoch_time_s" in wide.splitlines()[0] and "digits (" in wide  # the dataset
    assert main(["runs", "--tracking-uri", mlflow_uri, "--experiment", "table", "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["run_id"] == result.run_id
    assert rows[0]["run_name"] == "tabled"
    assert rows[0]["optimizer.learning_rate"] == "0.01"
    assert float(rows[0]["val_loss"]) == pytest.approx(result.history["val_loss"][-1])
    assert rows[0]["trainer.epochs"] == "2" and rows[0]["dataset"].startswith("digits (")
    assert main(["runs", "--tracking-uri", mlflow_uri, "--experiment", "table", "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["run_id"] == result.run_id
    assert record["val_loss"] == pytest.approx(result.history["val_loss"][-1])


def test_runs_table_rejects_an_unknown_experiment(mlflow_uri: str, capsys) -> None:
    code = main(["runs", "--tracking-uri", mlflow_uri, "--experiment", "nope-none"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no experiment named 'nope-none'" in err and len(err.strip().splitlines()) == 1


def test_harness_ui_serves_the_mlflow_ui_on_the_store(tmp_path: Path) -> None:
    port = _free_port()
    harness = Path(sys.executable).with_name("harness")
    uri = f"sqlite:///{tmp_path}/ui.db"
    proc = subprocess.Popen(
        [str(harness), "ui", "--tracking-uri", uri, "--port", str(port), "--workers", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        # Printed once the server answers: the runs view of the newest experiment (Default,
        # which has no saved view of compared columns, so the link names none).
        line = proc.stdout.readline().strip()
        assert line == (
            f"MLflow UI for {uri}: http://127.0.0.1:{port}/#/experiments/0/runs"
            "?workflowType=machine_learning"
        )
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "MLflow" in page.text
        experiments = requests.post(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
            json={"max_results": 10},
            timeout=5,
        ).json()
        assert [e["name"] for e in experiments["experiments"]] == ["Default"]
    finally:
        proc.terminate()  # SIGTERM stops the server and its workers, not only harness
        proc.wait(timeout=30)
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    # Quiet: the address and how to stop it; none of the server's own lines (its notices,
    # Uvicorn's, one per request), which --verbose shows.
    assert out.strip() == "Ctrl-C stops the server."
    assert "GET" not in err and "POST" not in err and "INFO" not in err, err
    assert "uvicorn" not in err.lower() and "site-packages" not in err, err

    def port_closed() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) != 0

    _wait_for(port_closed, 10, "the UI server to stop with harness ui")


def test_harness_ui_on_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    harness = Path(sys.executable).with_name("harness")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(harness), "ui", "--tracking-uri", f"sqlite:///{tmp_path}/ui.db"]
            + ["--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2
    (last,) = done.stderr.strip().splitlines()  # the server's own log is held back
    assert last.startswith(
        f"harness: error: the MLflow UI did not start at http://127.0.0.1:{port}"
    )
    assert "pick another with --port" in last and "Traceback" not in done.stderr


@pytest.mark.parametrize("attempt", [1, 2, 3])
def test_six_runs_started_together_in_an_empty_folder_all_finish(
    tmp_path: Path, attempt: int
) -> None:
    """The default store (`sqlite:///mlflow.db`) does not exist yet: each run would create it,
    and MLflow's migrations racing each other broke it for good."""
    config = write_config(tmp_path, {"trainer.epochs": 1, "data.params.limit": 100})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    harness = Path(sys.executable).with_name("harness")
    runs = [
        subprocess.Popen(
            [str(harness), "run", str(config), "tracking.system_metrics_every_s=0"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0] * 6, "\n---\n".join(outputs)
    found = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(["1"])
    assert sorted(run.info.status for run in found) == ["FINISHED"] * 6


def test_a_refused_tracking_server_is_named_in_one_line(in_tmp: Path, capsys) -> None:
    port = _free_port()  # nothing listens there
    config = write_config(in_tmp)
    code = main(["run", str(config), "--tracking-uri", f"http://127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert f"cannot start an MLflow run at 'http://127.0.0.1:{port}'" in line
    assert "Check that the server is reachable" in line
