"""`harness ui`: serve the MLflow UI on a store and print the runs view of the latest work."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from experiments.errors import UsageError, first_line
from experiments.ui.links import VIEW_KEY, VIEW_STATE_TAG_PREFIX, runs_view_url
from tracking.mlflow.store import store_lock

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
    verbose: bool = False,
) -> None:
    """Serve the UI for `tracking_uri` until Ctrl-C; print (and open) the runs view.

    An `http(s)://` URI is a server already: only its address is printed. The server's own
    log (MLflow's notices, Uvicorn's lines, a line per request) is shown with `verbose` only;
    otherwise its last lines are shown if it stops on its own.

    Raises:
        UsageError: the server did not start (port taken, unreadable store).
    """
    if tracking_uri.startswith(("http://", "https://")):
        _announce(tracking_uri.rstrip("/"), tracking_uri, open_browser=open_browser)
        return
    command = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
        "--host", host, "--port", str(port), "--workers", str(workers or default_workers()),
    ]  # fmt: skip
    # MLflow's job runner (several worker processes, gigabytes) serves GenAI scorers, not
    # the runs view.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    address = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    exposed = exposure_warning(host, port)
    if exposed is not None:
        print(exposed, file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the server too
    # The server creates a new store's tables: no other process of ours opens the store until
    # it serves (`tracking.mlflow.store`).
    starting = contextlib.ExitStack()
    starting.enter_context(store_lock(tracking_uri))
    # Both of the server's streams go to our stderr: stdout is for the address, for scripts.
    # Its own session: the server's workers are stopped as one group.
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        log = _ServerLog(server)
        # Importing MLflow takes seconds too: do it while the server starts. (Not the lookup:
        # on a new store the server creates the tables meanwhile.)
        with ThreadPoolExecutor(1) as pool:
            importing = pool.submit(importlib.import_module, "mlflow.tracking")
            wait_until_serving(
                server,
                address,
                log.reason,
                what="the MLflow UI",
                hint="If the port is taken, pick another with --port",
            )
            importing.result()
        starting.close()
        if verbose:
            log.start_echo()
        _announce(address, tracking_uri, open_browser=open_browser)
        print("Ctrl-C stops the server.", flush=True)
        if server.wait() != 0:
            log.show_tail()
            raise UsageError(
                f"the MLflow UI server at {address} stopped (exit status {server.returncode}); "
                "its log is above"
            )
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C or SIGTERM must not orphan the server's workers: stopping them is
        # what was asked for anyway.
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            starting.close()
            stop_server(server)
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)


def exposure_warning(host: str, port: int) -> str | None:
    """The line to show when the UI listens beyond this machine: it has no authentication."""
    import ipaddress

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        loopback = False
    if loopback:
        return None
    return (
        f"harness ui: warning: the MLflow UI has no authentication, and --host {host} lets "
        f"anyone who reaches this machine's port {port} read, change and delete these runs. "
        "Leave --host out (127.0.0.1) to keep it on this machine"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_server(server: subprocess.Popen[str]) -> None:
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

    KEPT = 200  # lines held for a failure's reason (a line per request would grow forever)

    def _pump(self, server: subprocess.Popen[str]) -> None:
        assert server.stdout is not None
        for line in server.stdout:
            with self._lock:
                if self._echo:
                    sys.stderr.write(line)
                else:
                    self._held.append(line)
                    del self._held[: -self.KEPT]

    def show_tail(self) -> None:
        """Print the last lines held (the server stopped on its own: its reason is there)."""
        with self._lock:
            sys.stderr.writelines(self._held[-40:])

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


def wait_until_serving(
    server: subprocess.Popen[Any],
    address: str,
    reason: Callable[[int | None], str],
    *,
    what: str,
    hint: str,
) -> None:
    """Until the MLflow server `server` answers at `address`; `what` did not start (with the
    `reason` read from its log, and the `hint`) is one line.

    Raises:
        UsageError: it stopped, or did not answer within two minutes.
    """
    import requests

    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise UsageError(
                f"{what} did not start at {address}: {reason(server.returncode)[:300]}. {hint}"
            )
        try:
            if requests.get(f"{address}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise UsageError(
        f"{what} did not answer at {address} within {_START_TIMEOUT_S:.0f} s; check the store "
        "URI and the port"
    )


def _announce(address: str, tracking_uri: str, *, open_browser: bool) -> None:
    url = _runs_view(address, tracking_uri)
    print(f"MLflow UI for {tracking_uri}: {url}", flush=True)
    if open_browser:
        webbrowser.open(url)


def _runs_view(address: str, tracking_uri: str) -> str:
    """The runs view of the newest experiment, with the compared columns if it has them."""
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    from experiments.tracking_setup import tracking_store
    from tracking.mlflow.queries import latest_experiment

    try:
        experiment = latest_experiment(tracking_store(tracking_uri))
    except (MlflowException, RequestException, OSError) as error:  # unreachable, unreadable
        raise UsageError(
            f"cannot read the MLflow store at '{tracking_uri}': {first_line(error)}. Check "
            "that the server is running, or pick another store with --tracking-uri"
        ) from None
    if experiment is None:
        return f"{address}/#/experiments"
    saved = f"{VIEW_STATE_TAG_PREFIX}{VIEW_KEY}" in experiment.tags
    return runs_view_url(address, experiment.experiment_id, view_key=VIEW_KEY if saved else None)
