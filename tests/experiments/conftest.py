"""Fixtures of the experiments tests that need a real PostgreSQL server."""

from __future__ import annotations

from typing import Any

import pytest


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
