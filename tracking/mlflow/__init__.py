"""Everything that talks to MLflow: the run's sink, run management, and their parts.

- `MlflowSink` (`sink`), configured by one `MlflowOptions` (`options`): a run's params,
  metrics, tags, artifacts and models; metric points go through `delivery/` (a sender
  thread, then a writer process).
- `MlflowRuns` (`runs`): experiments and runs outside a run's own stream (parent runs,
  marking a run FAILED, tags, artifacts, the model registry); `queries`: read-only questions
  for tables and links. Every call goes through one `RetryPolicy` (`retry`).
- `keras_model/`: a Keras model as an MLflow logged model, with the user code it needs.
- `system_metrics`: a run's own share of the host; `mlflow_internals`: the one module that
  touches MLflow's private pieces.

May import: mlflow, `tracking`'s own modules. Never `harness` or `experiments`. Imports are
lazy: MLflow loads `keras_model.plugin` while it is being imported itself.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracking.mlflow.options import MlflowOptions
    from tracking.mlflow.retry import RetryPolicy
    from tracking.mlflow.runs import MlflowRuns, RunNotFound
    from tracking.mlflow.sink import MlflowSink

__all__ = ["MlflowOptions", "MlflowRuns", "MlflowSink", "RetryPolicy", "RunNotFound"]

_LOCATIONS = {
    "MlflowOptions": "tracking.mlflow.options",
    "MlflowRuns": "tracking.mlflow.runs",
    "MlflowSink": "tracking.mlflow.sink",
    "RetryPolicy": "tracking.mlflow.retry",
    "RunNotFound": "tracking.mlflow.runs",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
