"""Where a run is tracked: the MLflow URI, the run's tags, and its sinks."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from experiments.config.urls import postgres_driver_problem
from experiments.errors import UsageError

if TYPE_CHECKING:
    from tracking.mlflow.runs import MlflowRuns

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


def resolve_tracking_uri(cli_uri: str | None, config_uri: str | None) -> str:
    """`--tracking-uri`, else `tracking.uri`, else `MLFLOW_TRACKING_URI`, else the local default.

    Raises:
        UsageError: the URI's scheme is not one MLflow can store runs in.
    """
    uri = cli_uri or config_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    scheme = urlparse(uri).scheme.split("+")[0]
    if scheme not in _SCHEMES:
        raise UsageError(
            f"tracking URI '{uri}' has an unsupported scheme '{scheme}'. Use one of "
            f"{', '.join(s + '://' for s in _SCHEMES)}, e.g. {DEFAULT_TRACKING_URI} or "
            "http://127.0.0.1:5000"
        )
    problem = postgres_driver_problem(uri, "tracking URI")
    if problem is not None:
        raise UsageError(problem)
    if scheme == "http" or scheme == "https":
        if not urlparse(uri).hostname:
            raise UsageError(f"tracking URI '{uri}' has no host; write it like http://HOST:PORT")
    return uri


# Every call to the tracking store, the run's sink included, is retried this many times on top
# of MLflow's own HTTP retries (which the CLI keeps short): a dead server is reported in seconds.
TRACKING_RETRIES = 2
TRACKING_BACKOFF_S = 0.5


def check_reachable(uri: str, *, doing: str = "cannot reach") -> None:
    """A tracking server that is not there is one line at once, not a wait of many seconds.

    Raises:
        UsageError: an `http(s)://` URI where no server answers.
    """
    from tracking.mlflow.store import UnreachableServer, check_server

    try:
        check_server(uri)
    except UnreachableServer as error:
        raise UsageError(
            f"{doing} '{uri}': {error}. Check that the server is reachable, or pick another "
            "store with --tracking-uri, tracking.uri or MLFLOW_TRACKING_URI"
        ) from None


def tracking_store(uri: str, *, create: bool = True) -> MlflowRuns:
    """The experiments and runs at `uri`, under the project's one retry policy.

    Raises:
        UsageError: a server that does not answer; a local store that is half-migrated, or
            (`create` False) missing.
    """
    from tracking.mlflow.retry import RetryPolicy
    from tracking.mlflow.runs import MlflowRuns
    from tracking.mlflow.store import BrokenStore, MissingStore, open_client

    check_reachable(uri, doing="cannot reach the MLflow store at")

    try:
        client = open_client(uri, create=create)
    except MissingStore as missing:
        raise UsageError(
            f"{missing}: nothing has been tracked there. Pass the --tracking-uri the runs used "
            "(or run this in the folder that holds their mlflow.db)"
        ) from None
    except BrokenStore as broken:
        raise UsageError(str(broken)) from None
    return MlflowRuns(uri, retry=RetryPolicy(TRACKING_RETRIES, TRACKING_BACKOFF_S), client=client)


PROCESS_TAG = "harness.process"  # `host:pid:start` of the process training the run


def process_tags() -> dict[str, str]:
    """The host and process training a run: set when it starts and when a resume takes over."""
    from tracking.owner import owner

    return {"harness.host": socket.gethostname(), PROCESS_TAG: owner()}


def _memory_growth(tf: Any) -> dict[str, str]:
    """`harness.gpu_memory_growth`: `on` when every visible GPU allocates as it needs, `off`
    when one holds its memory whole; no tag without a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return {}
    growing = all(tf.config.experimental.get_memory_growth(gpu) for gpu in gpus)
    return {"harness.gpu_memory_growth": "on" if growing else "off"}


def run_tags(*, engine: str, config_path: str | None) -> dict[str, str]:
    """Tags every run carries, namespaced `harness.*` beside MLflow's own `mlflow.*`.

    Engine, versions, devices, host, the user, the source config and its git commit.
    """
    import keras
    import tensorflow as tf

    tags = {
        "harness.engine": engine,
        "harness.tensorflow_version": tf.__version__,
        "harness.keras_version": keras.__version__,
        "harness.python_version": platform.python_version(),
        "harness.devices": ",".join(d.name for d in tf.config.list_logical_devices()),
        **_memory_growth(tf),
        **process_tags(),
        "mlflow.user": user_name(),
        "mlflow.source.type": "LOCAL",
    }
    if config_path:
        tags["mlflow.source.name"] = str(config_path)
        tags["harness.config_path"] = str(config_path)
    commit = _git_commit(Path(config_path).parent if config_path else Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def user_name() -> str:
    """Who runs this (MLflow's `mlflow.user`)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid (some containers)
        return os.environ.get("USER") or "unknown"


def _git_commit(directory: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=directory if directory.is_dir() else None,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
