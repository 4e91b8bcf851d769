"""`import tracking` stays light, and tracking never reaches into harness or experiments."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import tracking

HEAVY = ("mlflow", "tensorflow", "tensorboard", "keras")


def test_import_tracking_loads_no_backend() -> None:
    code = (
        "import sys, tracking\n"
        "from tracking import FanOutSink, InMemorySink, Sink, RunStatus\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_backend_sinks_import_on_first_use() -> None:
    from tracking.mlflow.sink import MlflowSink
    from tracking.tensorboard import TensorBoardSink

    assert tracking.MlflowSink is MlflowSink
    assert tracking.TensorBoardSink is TensorBoardSink
    assert set(tracking.__all__) <= set(dir(tracking))


def test_tracking_imports_nothing_from_harness_or_experiments() -> None:
    for path in Path(tracking.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in {"harness", "experiments"}, (path.name, name)
