"""The writer's one-statement insert stores exactly what `log_batch` stores, on sqlite and
PostgreSQL, and hands back to `log_batch` what it cannot do the same way."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracking.mlflow.mlflow_internals import bulk_log_metrics

pytestmark = pytest.mark.door("mlflow", "tracking/mlflow/mlflow_internals.py")

# Points as the sink hands them over: key, value, step, timestamp. A repeat within the batch,
# a NaN, infinities, a key whose latest value comes at a lower timestamp but a higher step.
POINTS = [
    ("step/batch_loss", 0.5, 1, 1000),
    ("step/batch_loss", 0.25, 2, 1001),
    ("step/batch_loss", 0.25, 2, 1001),
    ("step/grad_norm", float("nan"), 1, 1000),
    ("step/grad_norm", float("inf"), 2, 1001),
    ("step/learning_rate", -float("inf"), 1, 1000),
    ("step/learning_rate", 1e-3, 3, 999),
]


def _stored(client: MlflowClient, run_id: str) -> dict[str, Any]:
    run = client.get_run(run_id)
    histories = {
        key: sorted(
            (m.step, m.timestamp, _plain(m.value)) for m in client.get_metric_history(run_id, key)
        )
        for key in run.data.metrics
    }
    return {"latest": {k: _plain(v) for k, v in run.data.metrics.items()}, "history": histories}


def _plain(value: float) -> Any:
    return "nan" if math.isnan(value) else value


@pytest.fixture(params=["sqlite", "postgresql"])
def tracking_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, mlflow_database = request.getfixturevalue("postgres_databases")
    return str(mlflow_database)


def test_bulk_insert_stores_what_log_batch_stores(tracking_uri: str) -> None:
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("bulk")
    bulk, reference = (client.create_run(experiment).info.run_id for _ in range(2))
    assert bulk_log_metrics(client, bulk, POINTS)
    metrics = [Metric(key, value, ts, step) for key, value, step, ts in POINTS]
    client.log_batch(reference, metrics=metrics, synchronous=True)
    stored = _stored(client, bulk)
    assert stored == _stored(client, reference)
    assert stored["latest"]["step/learning_rate"] == 1e-3  # the highest step wins
    assert len(stored["history"]["step/batch_loss"]) == 2  # the repeat stored once

    # A point already in the store: nothing written, log_batch takes it (and skips it).
    assert not bulk_log_metrics(client, bulk, [*POINTS[:1], ("step/batch_loss", 0.1, 4, 1002)])
    assert _stored(client, bulk) == stored


def test_bulk_insert_refuses_what_log_batch_refuses(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("bulk")).info.run_id
    with pytest.raises(MlflowException, match="Invalid value"):
        bulk_log_metrics(client, run_id, [("bad//name", 1.0, 1, 1000)])
    client.delete_run(run_id)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        bulk_log_metrics(client, run_id, [("loss", 1.0, 1, 1000)])
    assert not client.get_run(run_id).data.metrics


def test_a_store_that_is_not_sql_falls_back_to_log_batch(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tmp_path.as_uri())  # the file store
    run_id = client.create_run(client.create_experiment("bulk")).info.run_id
    assert not bulk_log_metrics(client, run_id, [("loss", 1.0, 1, 1000)])
