"""The `harness runs` table: recent runs (or a study's trials), best first, fitted to the
terminal.

The printed table shows short run ids (any unique prefix is accepted where a run id is), the
quality metrics, and the params that differ among the runs shown; numbers to 4 significant
digits, learning rates in scientific notation. Columns that do not fit the terminal are left
out, least useful first, and named under the table; `--wide` shows every column, `--csv` and
`--json` print every column with full ids and values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.errors import UsageError
from experiments.ui.compare_view import COMPARED_PARAMS, compared_metrics
from experiments.ui.numbers import as_number, readable
from experiments.ui.run_ids import short_ids
from experiments.ui.text_table import Column, fit, listed, render, terminal_width

_SHOWN = ("run_id", "run_name", "status", "dataset")

# The CSV keeps these even when every run has the same value.
MAIN_PARAMS = (*COMPARED_PARAMS, "data.name", "trainer.epochs")
# Params that tell runs apart by construction, not by what was tried.
_NOT_COMPARED = ("tracking.run_name",)
# Metrics where higher is better; the rest (losses, errors) are better lower.
_HIGHER = ("acc", "auc", "precision", "recall", "f1", "iou", "r2")

GONE = "RUNNING (process gone)"
_GENERIC = ("name", "params", "mode", "type")  # keys that need their section to mean much


@dataclass(frozen=True)
class MainMetric:
    """The metric the runs are ranked by, and which way is better."""

    name: str
    higher_is_better: bool

    @property
    def described(self) -> str:
        return f"{self.name} ({'highest' if self.higher_is_better else 'lowest'})"


def higher_is_better(metric: str) -> bool:
    """Whether a bigger `metric` is better, from its name (accuracy yes, loss no)."""
    return any(word in metric.lower() for word in _HIGHER) and "loss" not in metric.lower()


def runs_frame(tracking_uri: str, experiment: str | None, *, limit: int = 20) -> Any:
    """Recent runs as a DataFrame, best first: id, name, status, dataset, the main params and
    those that differ among them, final epoch metrics.

    Raises:
        UsageError: `experiment` does not exist; the message lists those that do.
    """
    import pandas as pd

    found = _recent(tracking_uri, experiment, limit)
    if not found:
        return pd.DataFrame(columns=["run_id", "run_name", "status"])
    frame = pd.DataFrame([_row(run) for run in found])
    params = _params_frame(found)
    differing = differing_params(params)
    kept = [p for p in (*MAIN_PARAMS, *differing) if p in params.columns]
    metrics = [c for c in frame.columns if c not in _SHOWN]
    kept = list(dict.fromkeys(kept))
    frame = pd.concat([frame, params[kept]], axis=1)
    metric = main_metric(found, metrics)
    frame.attrs.update(main_metric=metric, differing=differing, params=kept, metrics=metrics)
    return _sorted(frame, metric)


def _recent(tracking_uri: str, experiment: str | None, limit: int) -> list[Any]:
    from experiments.tracking_setup import tracking_store
    from tracking.mlflow.queries import ExperimentNotFound, recent_runs

    try:
        return recent_runs(tracking_store(tracking_uri, create=False), experiment, limit=limit)
    except ExperimentNotFound as missing:
        raise UsageError(
            f"--experiment: no experiment named '{missing.name}' at {tracking_uri}. "
            f"Known experiments: {', '.join(missing.known) or 'none yet'}"
        ) from None


def _params_frame(found: Sequence[Any]) -> Any:
    import pandas as pd

    return pd.DataFrame([dict(run.data.params) for run in found])


def differing_params(params: Any) -> list[str]:
    """The params whose values are not the same in every run (a missing value counts)."""
    return [
        p
        for p in params.columns
        if p not in _NOT_COMPARED and params[p].astype(str).nunique(dropna=False) > 1
    ]


def main_metric(found: Sequence[Any], columns: Iterable[str]) -> MainMetric | None:
    """What ranks these runs: a search's metric, else the checkpoint monitor most runs have,
    else val_loss, val_accuracy or loss, whichever they logged."""
    columns = set(columns)
    for run in found:  # a study's parent or its trials
        tags = run.data.tags
        if tags.get("harness.search_metric"):
            name = tags["harness.search_metric"].split(",")[0]
            direction = tags.get("harness.search_direction", "minimize").split(",")[0]
            if name in columns:
                return MainMetric(name, direction == "maximize")
    monitors = [r.data.params.get("checkpoint.monitor") for r in found]
    monitors = [m for m in monitors if m and m in columns]
    if monitors:
        name = max(set(monitors), key=monitors.count)
        modes = [r.data.params.get("checkpoint.mode") for r in found]
        return MainMetric(name, "max" in modes and "min" not in modes)
    for name in ("val_loss", "val_accuracy", "loss"):
        if name in columns:
            return MainMetric(name, higher_is_better(name))
    return None


def _sorted(frame: Any, metric: MainMetric | None, key: str | None = None) -> Any:
    attrs = dict(frame.attrs)
    by = key or (metric.name if metric else None)
    if by is None:
        return frame
    if by not in frame.columns:
        raise UsageError(
            f"--sort '{by}': the table has no such column; sort by one of: "
            f"{', '.join(c for c in frame.columns if c != 'run_id')}"
        )
    higher = metric.higher_is_better if metric and by == metric.name else higher_is_better(by)
    values = frame[by].map(as_number)
    ascending = not higher if values.notna().any() else True
    order = (values if values.notna().any() else frame[by].astype(str)).sort_values(
        ascending=ascending, na_position="last", kind="stable"
    )
    frame = frame.loc[order.index].reset_index(drop=True)
    frame.attrs.update(attrs)
    return frame


def sort_by(frame: Any, key: str) -> Any:
    """`frame` sorted by the column `key`, best first for a metric.

    Raises:
        UsageError: there is no such column.
    """
    return _sorted(frame, frame.attrs.get("main_metric"), key)


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
    row.update({key: value for key, value in run.data.metrics.items() if "/" not in key})
    return row


# What the printed table shows.


@dataclass(frozen=True)
class Printed:
    """The lines of a printed table and the notes under it."""

    lines: list[str]
    notes: list[str]


def runs_columns(frame: Any, *, wide: bool) -> list[Column]:
    """The columns of `harness runs`, most useful first in rank."""
    metric: MainMetric | None = frame.attrs.get("main_metric")
    differing: list[str] = frame.attrs.get("differing", [])
    ids = short_ids([str(r) for r in frame["run_id"]])
    best = _best_row(frame, metric)
    marks = ["*" if i == best else " " for i in range(len(frame))]
    columns = [
        Column("run", [f"{m}{r}" for m, r in zip(marks, ids, strict=True)], rank=0),
        Column("name", [readable(v) for v in frame["run_name"]], rank=4),
        Column("status", [readable(v) for v in frame["status"]], rank=1),
    ]
    metrics = [c for c in frame.columns if c not in _SHOWN and not _is_param(c, frame)]
    quality = compared_metrics(metrics)
    if metric is not None and metric.name in quality:
        quality.remove(metric.name)
        columns.append(number_column(frame, metric.name, rank=0))
    for name in sorted(quality, key=lambda m: (not m.startswith("val"), m)):
        columns.append(number_column(frame, name, rank=2 if name.startswith("val") else 5))
    params = differing or [p for p in COMPARED_PARAMS if p in frame.columns]
    for name in sorted(params, key=_param_order):  # what users compare first
        columns.append(number_column(frame, name, rank=3 if name in COMPARED_PARAMS else 6))
    if wide:
        bookkeeping = [m for m in metrics if m not in compared_metrics(metrics)]
        columns += [number_column(frame, m, rank=7) for m in sorted(bookkeeping)]
        shown = {c.header for c in columns}
        columns += [
            number_column(frame, p, rank=7)
            for p in frame.columns
            if _is_param(p, frame) and p not in shown
        ]
        columns.append(Column("dataset", [readable(v) for v in frame["dataset"]], rank=7))
    return columns


def _param_order(name: str) -> tuple[int, str]:
    compared = COMPARED_PARAMS.index(name) if name in COMPARED_PARAMS else len(COMPARED_PARAMS)
    return compared, name


def short_headers(columns: Sequence[Column]) -> list[Column]:
    """Dotted headers cut to their last part (`optimizer.learning_rate` -> `learning_rate`)
    where that names one column only; the full names are in --csv and --json."""
    from collections import Counter

    def cut(header: str, parts: int) -> str:
        if header.split(".")[-1] in _GENERIC:  # `name` alone says nothing: `optimizer.name`
            parts += 1
        return ".".join(header.split(".")[-parts:])

    names = [c.header for c in columns]
    shown = list(names)
    for parts in (1, 2):
        counts = Counter(cut(h, parts) if "." in h else h for h in names)
        for i, header in enumerate(names):
            if "." in header and shown[i] == header and counts[cut(header, parts)] == 1:
                if cut(header, parts) not in names:
                    shown[i] = cut(header, parts)
    return [
        Column(header, c.cells, rank=c.rank, right=c.right)
        for header, c in zip(shown, columns, strict=True)
    ]


def _is_param(column: str, frame: Any) -> bool:
    return column in frame.attrs.get("params", ())


def number_column(frame: Any, key: str, *, rank: int) -> Column:
    cells = [readable(v, key) for v in frame[key]]
    numeric = all(as_number(v) is not None for v in frame[key] if readable(v, key))
    return Column(key, cells, rank=rank, right=numeric)


def _best_row(frame: Any, metric: MainMetric | None) -> int | None:
    if metric is None or metric.name not in frame.columns:
        return None
    values = frame[metric.name].map(as_number)
    if not values.notna().any():
        return None
    return int(values.idxmax() if metric.higher_is_better else values.idxmin())


def printed(columns: Sequence[Column], *, wide: bool, best: str | None) -> Printed:
    """The table fitted to the terminal (unless `wide`), with what was left out."""
    import textwrap

    width = None if wide else terminal_width()
    kept, dropped = fit(short_headers(columns), width)
    notes = []
    if best:
        notes.append(f"* best by {best}")
    if dropped:
        names = listed([c.header for c in dropped])
        notes.append(f"left out to fit the terminal: {names} (--wide shows them)")
    if width is not None:
        notes = [part for note in notes for part in textwrap.wrap(note, width)]
    return Printed(render(kept), notes)


def print_runs(frame: Any, *, wide: bool = False, echo: Callable[[str], None] = print) -> None:
    """Print `frame` (from `runs_frame`) as the fitted table."""
    if frame.empty:
        echo("no runs yet")
        return
    metric: MainMetric | None = frame.attrs.get("main_metric")
    table = printed(
        runs_columns(frame, wide=wide),
        wide=wide,
        best=metric.described if _best_row(frame, metric) is not None else None,
    )
    for line in [*table.lines, *table.notes]:
        echo(line)


def records(frame: Any) -> list[dict[str, Any]]:
    """Every column of `frame`, NaN as None (for --json)."""
    rows = frame.to_dict(orient="records")
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in rows
    ]


def to_json(frame: Any) -> str:
    return json.dumps(records(frame), indent=2, default=str)
