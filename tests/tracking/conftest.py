"""Fixtures of the tracking tests: an experiment of their own in the session's MLflow store."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def experiment_name(request: pytest.FixtureRequest) -> str:
    """An experiment name unique to the test, so tests sharing the store stay apart."""
    return re.sub(r"[^\w.-]+", "-", request.node.nodeid)


@pytest.fixture
def start_mlflow_sink(
    mlflow_uri: str, experiment_name: str, tmp_path: Path
) -> Callable[..., object]:
    """Start an `MlflowSink` run in the test's own experiment, artifacts under `tmp_path`."""
    from tracking.mlflow.sink import MlflowSink

    def start(**kwargs: object) -> MlflowSink:
        return MlflowSink.start(
            mlflow_uri,
            experiment=experiment_name,
            artifact_location=str(tmp_path / "artifacts"),
            **kwargs,  # type: ignore[arg-type]
        )

    return start
