"""Save metric points MLflow could not take to a JSON-lines file, and replay them later.

Replay from the shell:
    python -m tracking.mlflow.delivery.spill mlflow-unsent-<run_id>.jsonl --tracking-uri http://mlflow:5000
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tracking.mlflow.delivery.sender import MAX_METRICS_PER_BATCH, MetricPoint

_PREFIX = "mlflow-unsent-"
_SUFFIX = ".jsonl"


def spill_path(run_id: str, *, directory: str | os.PathLike[str] | None = None) -> Path:
    """Return where unsent metrics of `run_id` go: `mlflow-unsent-<run_id>.jsonl`."""
    return Path(directory if directory is not None else os.getcwd()) / f"{_PREFIX}{run_id}{_SUFFIX}"


def write_spill_file(
    points: Iterable[MetricPoint], *, run_id: str, directory: str | os.PathLike[str] | None = None
) -> Path:
    """Append `points` to the run's spill file, one JSON object per line, and return its path."""
    path = spill_path(run_id, directory=directory)
    # Append, so a second writer for the same run adds to the file instead of replacing it.
    with path.open("a", encoding="utf-8") as f:
        for key, value, step, timestamp in points:
            # Coerce: a step may arrive as a NumPy integer, which json cannot encode.
            record = {
                "key": key,
                "value": float(value),
                "step": int(step),
                "timestamp": int(timestamp),
            }
            f.write(json.dumps(record) + "\n")
    return path


def read_spill_file(path: str | os.PathLike[str]) -> list[MetricPoint]:
    """Read the points of a spill file written by `write_spill_file`."""
    points: list[MetricPoint] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                points.append((r["key"], float(r["value"]), int(r["step"]), int(r["timestamp"])))
    return points


def run_id_from_spill_path(path: str | os.PathLike[str]) -> str:
    """Return the run id encoded in a spill file's name."""
    name = Path(path).name
    if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
        raise ValueError(
            f"Cannot tell the run id from the file name: expected "
            f"'{_PREFIX}<run_id>{_SUFFIX}'. Received: {name!r}. Pass the run id explicitly."
        )
    return name[len(_PREFIX) : -len(_SUFFIX)]


def replay_spill_file(
    path: str | os.PathLike[str], *, tracking_uri: str, run_id: str | None = None
) -> int:
    """Send a spill file's points to `run_id` (default: from the file name); return the count."""
    from tracking.mlflow.runs import MlflowRuns

    points = read_spill_file(path)
    _send(MlflowRuns(tracking_uri), run_id or run_id_from_spill_path(path), points)
    return len(points)


def _send(runs: Any, run_id: str, points: list[MetricPoint]) -> None:
    """Log `points` to the run in batches MLflow accepts, each under the store's retries."""
    from mlflow.entities import Metric

    for start in range(0, len(points), MAX_METRICS_PER_BATCH):
        batch = [
            Metric(key, value, timestamp, step)
            for key, value, step, timestamp in points[start : start + MAX_METRICS_PER_BATCH]
        ]
        runs.retry(
            functools.partial(runs.client.log_batch, run_id, metrics=batch, synchronous=True)
        )


def spill(points: list[MetricPoint], *, run_id: str, tracking_uri: str) -> Path:
    """Save what a run could not send to its spill file (in the working directory, else the
    temp directory), with a warning that says how to replay it; the file."""
    try:
        path = write_spill_file(points, run_id=run_id)
    except OSError:
        # An unwritable working directory must not cost the metrics: use the temp dir.
        path = write_spill_file(points, run_id=run_id, directory=tempfile.gettempdir())
    warnings.warn(
        f"MLflow run {run_id}: {len(points)} metric points could not be sent and were saved "
        f"to {path}. Replay them with: python -m tracking.mlflow.delivery.spill {path} "
        f"--tracking-uri {tracking_uri} --run-id {run_id}",
        stacklevel=3,
    )
    return path


def replay_spilled(runs: Any, run_id: str, logged: set[tuple[str, int]]) -> None:
    """Send the points an earlier attempt of `run_id` saved to its unsent-metrics file (in the
    working directory or the temp directory) that the run lacks; then remove the file."""
    for path in (spill_path(run_id), spill_path(run_id, directory=tempfile.gettempdir())):
        if not path.is_file():
            continue
        points = [point for point in read_spill_file(path) if (point[0], point[2]) not in logged]
        _send(runs, run_id, points)
        logged.update((key, step) for key, _, step, _ in points)
        path.unlink()
        warnings.warn(
            f"MLflow run {run_id}: sent the {len(points)} metric points an earlier attempt "
            f"could not, from {path} (removed)",
            stacklevel=3,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: replay a spill file into an MLflow run."""
    parser = argparse.ArgumentParser(
        prog="python -m tracking.mlflow.delivery.spill", description=__doc__
    )
    parser.add_argument("path", help="the mlflow-unsent-<run_id>.jsonl file")
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI")
    parser.add_argument("--run-id", default=None, help="target run (default: from file name)")
    args = parser.parse_args(argv)
    count = replay_spill_file(args.path, tracking_uri=args.tracking_uri, run_id=args.run_id)
    print(f"Replayed {count} metric points from {args.path}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
