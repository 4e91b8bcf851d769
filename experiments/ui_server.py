"""`harness ui`: serve the MLflow UI on a store and print the runs view of the latest work."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import webbrowser
from concurrent.futures import ThreadPoolExecutor

from experiments.errors import UsageError
from experiments.ui_links import runs_view_url

_START_TIMEOUT_S = 120.0


def default_workers() -> int:
    """One server worker per 4 cores, 1 to 4: the UI is light, training needs the cores."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def serve_ui(
    tracking_uri: str,
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int | None = None,
    open_browser: bool = False,
) -> None:
    """Serve the UI for `tracking_uri` until Ctrl-C; print (and open) the runs view.

    An `http(s)://` URI is a server already: only its address is printed.

    Raises:
        UsageError: the server did not start (port taken, unreadable store).
    """
    if tracking_uri.startswith(("http://", "https://")):
        _announce(tracking_uri.rstrip("/"), latest_experiment_id(tracking_uri), tracking_uri,
                  open_browser=open_browser)  # fmt: skip
        return
    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
        "--host", host, "--port", str(port), "--workers", str(workers or default_workers()),
    ]  # fmt: skip
    # Both of the server's streams go to our stderr: stdout is for the address, for scripts.
    # Its own session: the server's workers (uvicorn, job runners) are stopped as one group.
    server = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the server too
    log = _ServerLog(server)
    # Importing MLflow takes seconds too: do it while the server starts. (Not the lookup: on a
    # new store the server creates the tables, and two creators race.)
    importing = ThreadPoolExecutor(1).submit(importlib.import_module, "mlflow.tracking")
    address = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    try:
        _wait_until_serving(server, address, log)
        log.start_echo()
        importing.result()
        _announce(
            address, latest_experiment_id(tracking_uri), tracking_uri, open_browser=open_browser
        )
        print("Ctrl-C stops the server.", flush=True)
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        _stop(server)
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop(server: subprocess.Popen[str]) -> None:
    """Stop the server and every process it started, politely, then for good."""
    for sig, grace_s in ((signal.SIGINT, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return  # the whole group is gone
        try:
            server.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGINT:
            time.sleep(0.5)  # let its workers finish exiting, then clear what is left


class _ServerLog:
    """The server's log: held while it starts (a failure is our one line), then echoed."""

    def __init__(self, server: subprocess.Popen[str]) -> None:
        self._held: list[str] = []
        self._echo = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(server,), daemon=True)
        self._thread.start()

    def _pump(self, server: subprocess.Popen[str]) -> None:
        assert server.stdout is not None
        for line in server.stdout:
            with self._lock:
                if self._echo:
                    sys.stderr.write(line)
                else:
                    self._held.append(line)

    def start_echo(self) -> None:
        with self._lock:
            sys.stderr.writelines(self._held)
            self._held.clear()
            self._echo = True

    def reason(self, returncode: int | None) -> str:
        self._thread.join(timeout=5)
        lines = [line.strip() for line in self._held if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        last = (errors or lines or [f"exit status {returncode}"])[-1]
        return last.split("ERROR:", 1)[-1].strip()  # without the log line's time stamp


def _wait_until_serving(server: subprocess.Popen[str], address: str, log: _ServerLog) -> None:
    import requests

    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            reason = log.reason(server.returncode)
            raise UsageError(
                f"the MLflow UI did not start at {address}: {reason[:300]}. If the port is "
                "taken, pick another with --port"
            )
        try:
            if requests.get(f"{address}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise UsageError(
        f"the MLflow UI did not answer at {address} within {_START_TIMEOUT_S:.0f} s; "
        "check the store URI and the port"
    )


def _announce(
    address: str, experiment_id: str | None, tracking_uri: str, *, open_browser: bool
) -> None:
    url = runs_view_url(address, experiment_id) if experiment_id else f"{address}/#/experiments"
    print(f"MLflow UI for {tracking_uri}: {url}", flush=True)
    if open_browser:
        webbrowser.open(url)


def latest_experiment_id(tracking_uri: str) -> str | None:
    """The experiment of the most recent run, else the newest experiment, else None."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = client.search_experiments(order_by=["creation_time DESC"])
    if not experiments:
        return None
    ids = [e.experiment_id for e in experiments]
    latest = client.search_runs(ids, max_results=1, order_by=["attributes.start_time DESC"])
    return str(latest[0].info.experiment_id if latest else experiments[0].experiment_id)
