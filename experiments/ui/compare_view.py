"""The columns users compare runs by, the same in `harness runs` and the MLflow UI's table.

The UI's runs table shows no param or metric column until the user picks some; the UI keeps
a picked view as an experiment tag (`mlflow.sharedViewState.<key>`, what its "Share" button
writes) and opens it from `?viewStateShareKey=<key>`. Each run publishes the view of its
experiment, and `harness run` / `harness ui` link to it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable

from experiments.ui.links import VIEW_KEY, VIEW_STATE_TAG_PREFIX, compare_view_state

# The data set has its own column in the UI ("Datasets"); epochs show in the step axis.
COMPARED_PARAMS = (
    "trainer.engine",
    "model.name",
    "optimizer.name",
    "optimizer.learning_rate",
    "data.batch_size",
)
# Epoch metrics that describe the run's pace, not its quality: not compared by default.
_BOOKKEEPING = ("epoch", "epoch_time_s", "steps_per_sec", "learning_rate")


def compared_metrics(keys: Iterable[str]) -> list[str]:
    """The epoch metrics worth a column: quality metrics, not bookkeeping or vector parts."""
    return sorted(k for k in keys if "/" not in k and k not in _BOOKKEEPING)


Sorting = tuple[str, bool] | None  # a metric and whether lower is better (ascending)


def main_metric(metrics: Iterable[str], monitor: str | None, mode: str = "min") -> Sorting:
    """The metric a run's experiment is sorted by: `checkpoint.monitor` when set, else
    val_loss, val_accuracy or loss, whichever the run logs; and whether lower is better."""
    logged = set(metrics)
    if monitor:
        return monitor, mode != "max"
    for name, ascending in (("val_loss", True), ("val_accuracy", False), ("loss", True)):
        if name in logged:
            return name, ascending
    return None


def publish_compare_view(
    tracking_uri: str, experiment_id: str, metrics: Iterable[str], *, sort: Sorting = None
) -> bool:
    """Add this run's compared columns to the experiment's shared view (`VIEW_KEY`), sorted
    by `sort` (best first) unless the view is sorted already (a search's parent sorts it by
    the search's metric before its trials run).

    The columns of earlier runs stay: the view holds the union. Returns whether the view is
    saved; a failure only warns, since the run itself is tracked already.
    """
    from experiments.tracking_setup import tracking_store

    tag = f"{VIEW_STATE_TAG_PREFIX}{VIEW_KEY}"
    try:
        runs = tracking_store(tracking_uri)
        saved = runs.get_experiment(experiment_id).tags.get(tag)
        known = _saved_metrics(saved)
        sort = _saved_sort(saved) or sort
        shown = compared_metrics({*known, *metrics})
        if sort is not None and sort[0] in shown:  # the main metric first
            shown.remove(sort[0])
            shown.insert(0, sort[0])
        state = compare_view_state(
            COMPARED_PARAMS,
            shown,
            order_by=sort[0] if sort else None,
            ascending=sort[1] if sort else True,
        )
        if state != saved:
            runs.set_experiment_tag(experiment_id, tag, state)
    except Exception as error:
        warnings.warn(
            f"could not save the runs-table view of experiment {experiment_id}: {error!r}",
            stacklevel=2,
        )
        return False
    return True


def _saved_metrics(saved: str | None) -> list[str]:
    if not saved:
        return []
    try:
        columns = json.loads(saved).get("selectedColumns", [])
    except (ValueError, AttributeError):
        return []  # not ours, or edited: replaced by the compared columns
    return [c[len("metrics.`") : -1] for c in columns if c.startswith("metrics.`")]


def _saved_sort(saved: str | None) -> Sorting:
    if not saved:
        return None
    try:
        state = json.loads(saved)
        key = str(state["orderByKey"])
    except (ValueError, KeyError, TypeError):
        return None
    if not key.startswith("metrics.`"):
        return None
    return key[len("metrics.`") : -1], bool(state.get("orderByAsc", True))
