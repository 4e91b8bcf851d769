"""Shared fixtures: quiet TensorFlow, the CPU as two devices, one real MLflow sqlite store per
session."""

from __future__ import annotations

import importlib.metadata
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
# Metric journals (and links to them) of the session's runs: not in the user's own cache.
os.environ["XDG_CACHE_HOME"] = __import__("tempfile").mkdtemp(prefix="harness-tests-cache-")

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so MirroredStrategy runs two replicas on this CPU (tests of
# `trainer.distribute`). Set before TensorFlow initialises; everything else still places
# on the first, as on a machine with one.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow sqlite store shared by the session; its schema is created here, once
    (its migrations take seconds), not inside the first test that uses it."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty working directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """Keep each phase's report on the item (`item.rep_call`), for fixtures that save
    artifacts (screenshots) only when the test failed; a failing contract test of a door to a
    library's internals (`pytest.mark.door`) says which version of the library broke it."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)
    door = item.get_closest_marker("door")
    if door is not None and report.failed:
        library, module = door.args
        report.longrepr = (
            f"{library} {importlib.metadata.version(library)} no longer works as {module} "
            f"expects ({item.name}): update {module} for it.\n{report.longrepr}"
        )


@pytest.fixture
def postgres_databases() -> Any:
    """Two fresh PostgreSQL databases on 127.0.0.1:5432: Optuna's and MLflow's (both use
    alembic, so they cannot share one), dropped afterwards."""
    import uuid

    import psycopg

    names = [f"harness_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("optuna", "mlflow")]
    server = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(server, autocommit=True) as connection:
        for name in names:
            connection.execute(f"CREATE DATABASE {name}")
    yield [f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}" for name in names]
    with psycopg.connect(server, autocommit=True) as connection:
        for name in names:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
