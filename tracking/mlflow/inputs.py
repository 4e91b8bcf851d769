"""Turn a `DatasetRecord` into the MLflow run input the UI's "Datasets" column shows."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tracking.dataset import DatasetRecord
from tracking.mlflow import mlflow_internals


def dataset_input(record: DatasetRecord) -> Any:
    """An `mlflow.entities.DatasetInput`: name, source, digest, schema, number of examples."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.numpy_dataset import from_numpy
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source = CodeDatasetSource({"mlflow.source.name": record.source})
    if record.features is not None:
        dataset = from_numpy(
            record.features,
            targets=record.targets,  # type: ignore[arg-type]  # None is its default
            source=source,
            name=record.name,
        )
        entity = mlflow_internals.dataset_entity(dataset)
    else:
        # A stream cannot be hashed without reading it: the digest names what produced it.
        identity = json.dumps([record.name, record.source, record.num_examples])
        profile = None if record.num_examples is None else {"num_rows": record.num_examples}
        entity = Dataset(
            name=record.name,
            digest=hashlib.sha256(identity.encode()).hexdigest()[:8],
            source_type=mlflow_internals.source_type(source),
            source=source.to_json(),
            profile=json.dumps(profile) if profile else None,
        )
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, record.context)])


def log_dataset(runs: Any, run_id: str, record: DatasetRecord) -> None:
    """Log `record` as an input of `run_id` (`runs`: an `MlflowRuns`), also when another run
    logs the same data set at the same moment.

    MLflow's stores look the data set up, then insert it: two runs logging the same data (the
    trials of a search) at the same moment both miss it and the second insert breaks the
    table's unique key. The data set exists then, so logging again links the run to it.
    """
    from mlflow.exceptions import MlflowException

    entity = dataset_input(record)

    def log() -> None:
        try:
            runs.client.log_inputs(run_id, datasets=[entity])
        except MlflowException as exc:
            if not _lost_insert_race(exc):
                raise
            runs.client.log_inputs(run_id, datasets=[entity])

    runs.retry(log)


def _lost_insert_race(exc: Exception) -> bool:
    """A unique-key violation, as SQLite, PostgreSQL or MySQL words it (also through a server)."""
    text = str(exc)
    return any(
        words in text
        for words in ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry")
    )
