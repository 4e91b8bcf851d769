"""`harness runs --study NAME`: a search's trials, best first, fitted to the terminal."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from experiments.errors import UsageError
from experiments.ui.numbers import as_number, readable
from experiments.ui.run_ids import short_ids
from experiments.ui.runs_table import MainMetric, number_column, printed
from experiments.ui.text_table import Column


def study_frame(tracking_uri: str, study: str) -> Any:
    """The trials of `study` (child runs of its parent runs), best first by their value (the
    best epoch's metric, as told to Optuna)."""
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
    higher = tags.get("harness.search_direction", "minimize").split(",")[0] == "maximize"
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
    frame = frame.sort_values(
        ["value", "trial"], ascending=[not higher, True], na_position="last"
    ).reset_index(drop=True)
    frame.attrs["main_metric"] = MainMetric(metric, higher)
    return frame


def print_study(frame: Any, *, wide: bool = False, echo: Callable[[str], None] = print) -> None:
    """Print a study's trials (from `study_frame`) as the fitted table, best first."""
    if frame.empty:
        echo("no trials yet")
        return
    metric: MainMetric = frame.attrs["main_metric"]
    values = frame["value"].map(as_number)
    best = 0 if values.notna().any() else None
    ids = short_ids([str(r) for r in frame["run_id"]])
    fixed = {"trial", "state", "device", "value", metric.name, "run_id"}
    columns = [
        Column(
            "trial",
            [f"{'*' if i == best else ' '}{t}" for i, t in enumerate(frame["trial"])],
            rank=0,
            right=True,
        ),
        Column("state", [readable(v) for v in frame["state"]], rank=1),
        Column("device", [readable(v) for v in frame["device"]], rank=2),
        number_column(frame, "value", rank=0),
        number_column(frame, metric.name, rank=5),
        Column("run", ids, rank=1),
    ]
    params = [c for c in frame.columns if c not in fixed]
    columns += [number_column(frame, p, rank=3) for p in params]
    table = printed(
        columns,
        wide=wide,
        best=f"value: the best epoch's {metric.described}" if best is not None else None,
    )
    for line in [*table.lines, *table.notes]:
        echo(line)


def _first_value(text: str | None) -> float | None:
    return float(text.split(",")[0]) if text else None
