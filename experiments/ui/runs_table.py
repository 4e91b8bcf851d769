"""The `harness runs` table, built from `mlflow.search_runs`."""

from __future__ import annotations

from typing import Any

from experiments.errors import UsageError
from experiments.ui.compare_view import COMPARED_PARAMS, compared_metrics

_SHOWN = ("run_id", "run_name", "status", "dataset")

# The CSV keeps these; the printed table, like the UI's view, shows the compared columns.
MAIN_PARAMS = (*COMPARED_PARAMS, "data.name", "trainer.epochs")


def runs_frame(tracking_uri: str, experiment: str | None, *, limit: int = 20) -> Any:
    """Recent runs as a DataFrame: id, name, status, main params, final epoch metrics.

    Raises:
        UsageError: `experiment` does not exist; the message lists those that do.
    """
    import pandas as pd

    from experiments.tracking_setup import tracking_store
    from tracking.mlflow.queries import ExperimentNotFound, recent_runs

    try:
        found = recent_runs(tracking_store(tracking_uri, create=False), experiment, limit=limit)
    except ExperimentNotFound as missing:
        raise UsageError(
            f"--experiment: no experiment named '{missing.name}' at {tracking_uri}. "
            f"Known experiments: {', '.join(missing.known) or 'none yet'}"
        ) from None
    rows = [_row(run) for run in found]
    if not rows:
        return pd.DataFrame(columns=["run_id", "run_name", "status"])
    frame = pd.DataFrame(rows)
    columns = [*_SHOWN, *(p for p in MAIN_PARAMS if p in frame.columns)]
    metrics = sorted(c for c in frame.columns if c.startswith("metrics."))
    frame = frame[columns + metrics]
    return frame.rename(columns={c: c.removeprefix("metrics.") for c in metrics})


GONE = "RUNNING (process gone)"


def _status(run: Any) -> str:
    """MLflow's status; a RUNNING run whose process (on this host) has ended says so."""
    from experiments.tracking_setup import PROCESS_TAG
    from tracking.owner import gone

    if run.info.status == "RUNNING" and gone(run.data.tags.get(PROCESS_TAG)):
        return GONE
    return str(run.info.status)


def orphaned(frame: Any) -> list[str]:
    """The ids of the runs in `frame` that are RUNNING with their process gone."""
    if "status" not in frame.columns:
        return []
    return [str(run_id) for run_id in frame.loc[frame["status"] == GONE, "run_id"]]


def _row(run: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": _status(run),
        # The UI's "Datasets" column: the training data's name and digest.
        "dataset": ", ".join(
            f"{d.dataset.name} ({d.dataset.digest})"
            for d in (run.inputs.dataset_inputs if run.inputs else [])
            if any(t.key == "mlflow.data.context" and t.value == "training" for t in d.tags)
        ),
    }
    row.update({p: run.data.params[p] for p in MAIN_PARAMS if p in run.data.params})
    row.update(
        {f"metrics.{key}": value for key, value in run.data.metrics.items() if "/" not in key}
    )
    return row


def print_table(frame: Any) -> None:
    """Print the runs as a rich table (the CSV keeps every column)."""
    metrics = compared_metrics(c for c in frame.columns if c not in (*_SHOWN, *MAIN_PARAMS))
    params = [c for c in COMPARED_PARAMS if c in frame.columns]
    print_columns(frame[[*(c for c in _SHOWN if c in frame.columns), *params, *metrics]])


def print_columns(shown: Any) -> None:
    """Print every column of `shown` as a rich table."""
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for column in shown.columns:
        table.add_column(str(column), overflow="fold")
    for row in shown.itertuples(index=False):
        table.add_row(*(_cell(value) for value in row))
    # Piped output has no terminal width; don't squeeze columns to nothing.
    Console(width=None if sys.stdout.isatty() else 240).print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"  # NaN: a param the trial did not have
    return "" if value is None else str(value)


def study_frame(tracking_uri: str, study: str) -> Any:
    """The trials of `study` (child runs of its parent runs), best first by their value (the
    best epoch's metric, as told to Optuna)."""
    import json

    import pandas as pd

    from experiments.tracking_setup import tracking_store
    from tracking.mlflow.queries import tagged_runs

    runs = tracking_store(tracking_uri, create=False)
    parents = tagged_runs(runs, {"harness.study": study, "harness.role": "study"})
    if not parents:
        raise UsageError(
            f"no study '{study}' in {tracking_uri}: name a study that harness search ran "
            "there (its parent run is tagged harness.study), or pass its --tracking-uri"
        )
    tags = parents[0].data.tags
    metric = tags.get("harness.search_metric", "val_loss").split(",")[0]
    ascending = tags.get("harness.search_direction", "minimize").split(",")[0] == "minimize"
    rows = []
    for parent in parents:
        for run in runs.child_runs(parent):
            row = {
                "trial": int(run.data.tags.get("harness.trial_number", -1)),
                "state": run.data.tags.get("harness.trial_state", run.info.status),
                "device": run.data.tags.get("harness.device", ""),
                "value": _first_value(run.data.tags.get("harness.trial_value")),
                metric: run.data.metrics.get(metric),  # at the last epoch
                "run_id": run.info.run_id,
            }
            row.update(json.loads(run.data.tags.get("harness.trial_params", "{}")))
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("value", ascending=ascending, na_position="last")


def _first_value(text: str | None) -> float | None:
    return float(text.split(",")[0]) if text else None
