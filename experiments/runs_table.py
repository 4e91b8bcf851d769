"""The `harness runs` table, built from `mlflow.search_runs`."""

from __future__ import annotations

from typing import Any

MAIN_PARAMS = (
    "trainer.engine",
    "model.name",
    "data.name",
    "optimizer.name",
    "optimizer.learning_rate",
    "data.batch_size",
    "trainer.epochs",
)


def runs_frame(tracking_uri: str, experiment: str | None, *, limit: int = 20) -> Any:
    """Recent runs as a DataFrame: id, name, status, main params, final epoch metrics."""
    import mlflow
    import pandas as pd

    # mlflow.search_runs reads the global tracking URI: set it for this call only.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        frame = _search(mlflow, experiment, tracking_uri, limit)
    finally:
        mlflow.set_tracking_uri(previous)
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "run_name", "status"])
    columns = {"run_id": "run_id", "tags.mlflow.runName": "run_name", "status": "status"}
    columns.update({f"params.{p}": p for p in MAIN_PARAMS})
    epoch_metrics = sorted(
        c
        for c in frame.columns
        if c.startswith("metrics.") and "/" not in c and c not in ("metrics.epoch",)
    )
    columns.update({c: c.removeprefix("metrics.") for c in epoch_metrics})
    present = {k: v for k, v in columns.items() if k in frame.columns}
    return frame[list(present)].rename(columns=present)


_HIDDEN_IN_TABLE = ("learning_rate", "epoch_time_s", "steps_per_sec", "data.name", "trainer.epochs")


def _search(mlflow: Any, experiment: str | None, tracking_uri: str, limit: int) -> Any:
    from experiments.errors import UsageError

    if experiment is not None and mlflow.get_experiment_by_name(experiment) is None:
        names = [e.name for e in mlflow.search_experiments()]
        raise UsageError(
            f"--experiment: no experiment named '{experiment}' at {tracking_uri}. "
            f"Known experiments: {', '.join(names) or 'none yet'}"
        )
    return mlflow.search_runs(
        experiment_names=[experiment] if experiment else None,
        search_all_experiments=experiment is None,
        max_results=limit,
        order_by=["attributes.start_time DESC"],
    )


def print_table(frame: Any) -> None:
    """Print the runs as a rich table (the CSV keeps every column)."""
    import sys

    from rich.console import Console
    from rich.table import Table

    shown = frame[[c for c in frame.columns if c not in _HIDDEN_IN_TABLE]]
    table = Table(show_lines=False)
    for column in shown.columns:
        table.add_column(str(column), overflow="fold")
    for row in shown.itertuples(index=False):
        table.add_row(*(_cell(value) for value in row))
    # Piped output has no terminal width; don't squeeze columns to nothing.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
