"""Shared fixtures: one real MLflow sqlite store for the whole tracking test session."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URI of a real sqlite MLflow store for tracking tests; migrations run once, here."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    MlflowClient(uri).search_experiments()  # creates the schema now, not in the first test
    return uri


@pytest.fixture
def experiment_name(request: pytest.FixtureRequest) -> str:
    """An experiment name unique to the test, so tests sharing the store stay apart."""
    return re.sub(r"[^\w.-]+", "-", request.node.nodeid)


@pytest.fixture
def start_mlflow_sink(
    mlflow_store: str, experiment_name: str, tmp_path: Path
) -> Callable[..., object]:
    """Start an `MlflowSink` run in the test's own experiment, artifacts under `tmp_path`."""
    from tracking.mlflow.sink import MlflowSink

    def start(**kwargs: object) -> MlflowSink:
        return MlflowSink.start(
            mlflow_store,
            experiment=experiment_name,
            artifact_location=str(tmp_path / "artifacts"),
            **kwargs,  # type: ignore[arg-type]
        )

    return start
