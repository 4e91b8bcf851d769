"""Where a run's metrics go: the `Sink` interface and its MLflow, TensorBoard and test sinks.

`sink`: the interface, every method a no-op by default; `fanout`: several sinks as one;
`memory`: in memory, for tests; `tensorboard`: event files; `mlflow/`: MLflow runs (the sink,
run management, metric delivery, models).

May import: its own modules and the backends' libraries (mlflow, tensorboard). Never
`harness` or `experiments`. The MLflow and TensorBoard sinks are imported on first use, so
`import tracking` stays light (no mlflow, tensorboard or tensorflow).

Example:
    from tracking import FanOutSink, MlflowSink, TensorBoardSink

    sink = FanOutSink([
        MlflowSink.start("sqlite:///mlflow.db", experiment="mnist"),
        TensorBoardSink("runs/mnist"),
    ])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tracking.dataset import DatasetRecord
from tracking.fanout import FanOutSink
from tracking.memory import InMemorySink
from tracking.sink import RunStatus, Sink

if TYPE_CHECKING:
    from tracking.mlflow.sink import MlflowSink
    from tracking.tensorboard import TensorBoardSink

__all__ = [
    "DatasetRecord",
    "FanOutSink",
    "InMemorySink",
    "MlflowSink",
    "RunStatus",
    "Sink",
    "TensorBoardSink",
]

_LAZY_MODULES = {
    "MlflowSink": "tracking.mlflow.sink",
    "TensorBoardSink": "tracking.tensorboard",
}


def __getattr__(name: str) -> Any:
    module = _LAZY_MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
