"""Turn a `DatasetRecord` into the MLflow run input the UI's "Datasets" column shows."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tracking.dataset import DatasetRecord


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
        entity = dataset._to_mlflow_entity()
    else:
        # A stream cannot be hashed without reading it: the digest names what produced it.
        identity = json.dumps([record.name, record.source, record.num_examples])
        profile = None if record.num_examples is None else {"num_rows": record.num_examples}
        entity = Dataset(
            name=record.name,
            digest=hashlib.sha256(identity.encode()).hexdigest()[:8],
            source_type=source._get_source_type(),
            source=source.to_json(),
            profile=json.dumps(profile) if profile else None,
        )
    return DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, record.context)])
