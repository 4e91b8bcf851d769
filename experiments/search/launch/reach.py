"""What every node of a cluster must reach, served by the search's driver when it is local.

- The study: a storage only this machine can open (the journal file, SQLite) is served
  through Optuna's gRPC storage proxy (`grpc://HOST:PORT`, read by `open_storage`), so a Ray
  cluster needs no database of its own. PostgreSQL is reachable already.
- The runs: a local MLflow store is served by an `mlflow server` (artifacts proxied), whose
  address the trials get. A tracking server is reachable already.

Both listen on the driver's address as the cluster sees it, and stop when the search ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from experiments.errors import UsageError

SERVED_STORAGES = ("journal://", "sqlite")  # storages only this machine can open


def free_port(host: str) -> int:
    """A TCP port free on `host` now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def storage_served(storage_url: str, storage: Any, host: str) -> Iterator[str]:
    """The storage URL the nodes use: `storage_url` itself when they can reach it, else
    `grpc://HOST:PORT` of a proxy serving `storage` (the driver's own, opened) until the
    block ends."""
    if not storage_url.startswith(SERVED_STORAGES):
        yield storage_url
        return
    import optuna

    port = free_port(host)
    warnings.filterwarnings(  # the proxy is "experimental" in Optuna 5: our choice, not news
        "ignore", category=optuna.exceptions.ExperimentalWarning, module="threading"
    )
    # Optuna's server blocks in `wait_for_termination`: it serves from a daemon thread, which
    # ends with this process (its connections are the trials', which end first).
    thread = threading.Thread(
        target=optuna.storages.run_grpc_proxy_server,
        args=(storage,),
        kwargs={"host": host, "port": port},
        name="optuna-grpc-proxy",
        daemon=True,
    )
    thread.start()
    _wait_for_port(host, port, what="the Optuna storage proxy")
    yield f"grpc://{host}:{port}"


def open_grpc_storage(url: str) -> Any:
    """The storage behind `grpc://HOST:PORT` (a search driver's proxy)."""
    import optuna

    host, _, port = url.removeprefix("grpc://").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(
            f"--storage '{url}': a gRPC storage proxy is written grpc://HOST:PORT, e.g. "
            "grpc://10.0.0.5:13000"
        )
    with warnings.catch_warnings():  # "experimental" in Optuna 5: our choice, not news
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.GrpcStorageProxy(host=host, port=int(port))


@contextmanager
def tracking_served(tracking_uri: str, host: str, folder: Path) -> Iterator[str]:
    """The tracking URI the nodes use: `tracking_uri` itself when it is a server, else the
    address of an `mlflow server` on that store (artifacts served), its log in `folder`,
    stopped when the block ends."""
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        yield tracking_uri
        return
    from experiments.ui.server import stop_server, wait_until_serving
    from tracking.mlflow.store import sqlite_path

    port = free_port(host)
    artifacts = _artifact_root(tracking_uri, sqlite_path(tracking_uri))
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
        "--host", host, "--port", str(port), "--workers", "2",
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
        # The nodes name the server by this address (MLflow accepts private ones only).
        "--allowed-hosts", f"{host},{host}:{port},localhost,127.0.0.1",
    ]  # fmt: skip
    # MLflow's job runner (worker processes, gigabytes) serves GenAI scorers, not runs.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    log = folder / "mlflow-server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
    address = f"http://{host}:{port}"
    try:
        wait_until_serving(
            server,
            address,
            lambda code: _last_line(log) or f"exit status {code}",
            what="the MLflow server for the cluster's trials",
            hint=f"Its log: {log}",
        )
        yield address
    finally:
        stop_server(server)  # type: ignore[arg-type]


def _artifact_root(tracking_uri: str, database: Path | None) -> Path:
    """Where the served store's new artifacts go: MLflow's local default (`./mlruns`) beside
    the database, as a local run would have put them."""
    if database is not None:
        return (database.parent / "mlruns").resolve()
    return Path(tracking_uri.removeprefix("file://")).resolve()


def _stop_with_parent() -> None:
    """In the server's process: SIGTERM when the search dies (even by SIGKILL), so no server
    outlives it (Linux's parent-death signal; elsewhere it is stopped at the search's end)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _wait_for_port(host: str, port: int, *, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise UsageError(f"{what} did not start listening on {host}:{port} in {timeout_s:.0f} s")
