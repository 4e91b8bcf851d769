"""A tracking server that goes away, then the run killed: no metric point is lost.

A real `mlflow server`; a real `harness run` in a child process logging every step; the server
killed, the run killed (SIGKILL) once it has saved 1, 2 or 3 checkpoints in the outage, the
server restarted, `harness resume`: every step of every `step/*` metric is in MLflow exactly
once, with the values of an uninterrupted run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.tracking import MlflowClient

from experiments.cli import main
from tests.experiments.configs import write_config
from tests.paths import ROOT
from tracking.mlflow.delivery.journal import read


def _changes(experiment: str, checkpoints: Path) -> dict[str, Any]:
    return {
        "tracking.tensorboard_dir": str(checkpoints.parent / "tb"),
        "trainer.epochs": 4,
        "trainer.log_every_n_steps": 1,
        "trainer.deterministic": True,
        "checkpoint.dir": str(checkpoints / "{run_id}"),
        "checkpoint.every_n_steps": 5,
        "checkpoint.keep_last": 10,
        "tracking.experiment": experiment,
        "tracking.system_metrics_every_s": 0,
        "callbacks": [
            {"class_path": "tests.experiments.user_code:SlowBatches", "init_args": {"seconds": 0.1}}
        ],
    }


def _wait_for(condition: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Server:
    """An `mlflow server` on one port and one store, stopped and started again at will."""

    def __init__(self, root: Path) -> None:
        self.root = root
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.root}/server.db",
            "--artifacts-destination", str(self.root / "artifacts"),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for(self._healthy, "the mlflow server", timeout=120)

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        _wait_for(lambda: not self._healthy(), "the server to be gone")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> dict[str, Any]:
    """The step metrics of the same run, uninterrupted."""
    root = tmp_path_factory.mktemp("reference")
    reference = write_config(root, _changes("reference", root / "ck"), "ref.yaml")
    assert main(["run", str(reference), "--tracking-uri", mlflow_uri]) == 0
    local = MlflowClient(mlflow_uri)
    (run,) = local.search_runs([local.get_experiment_by_name("reference").experiment_id])
    history = _step_history(local, run.info.run_id)
    assert len(history["step/batch_loss"]) == 32  # every update of 4 epochs of 8
    return history


def _step_history(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = [k for k in client.get_run(run_id).data.metrics if k.startswith("step/")]
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in keys
    }


@pytest.mark.parametrize("checkpoints_in_the_outage", [1, 2, 3])
def test_a_server_outage_then_a_kill_loses_no_metric_point(
    checkpoints_in_the_outage: int,
    expected: dict[str, Any],
    server: Server,
    in_tmp: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoints = in_tmp / "ck"
    config = write_config(in_tmp, _changes("outage", checkpoints), "outage.yaml")
    child = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", "run", str(config), "--tracking-uri", server.url],
        cwd=in_tmp,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        client = MlflowClient(server.url)

        def logging_steps() -> str | None:
            assert child.poll() is None, child.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
            experiment = client.get_experiment_by_name("outage")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and len(client.get_metric_history(runs[0].info.run_id, "step/batch_loss")) >= 3:
                return str(runs[0].info.run_id)
            return None

        run_id = _wait_for(logging_steps, "the run to log its first steps")
        server.kill()
        saved = len(list((checkpoints / run_id).glob("ckpt-*")))
        _wait_for(
            lambda: (
                len(list((checkpoints / run_id).glob("ckpt-*")))
                >= saved + checkpoints_in_the_outage
            ),
            f"{checkpoints_in_the_outage} checkpoints in the outage",
        )
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    journal = checkpoints / run_id / "metrics.journal"
    held = read(journal)  # what the dead server never got, on disk
    assert held is not None and len(held.undelivered) >= 5 * 4  # 5 steps of 4 step metrics

    server.start()
    capsys.readouterr()
    assert main(["resume", run_id, "--tracking-uri", server.url]) == 0
    assert client.get_run(run_id).info.status == "FINISHED"
    got = _step_history(client, run_id)
    assert sorted(got) == sorted(expected)
    for key, points in expected.items():
        assert got[key] == points, key  # every step once, the uninterrupted run's values
    assert not journal.exists()  # all delivered
