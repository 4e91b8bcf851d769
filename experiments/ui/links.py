"""Addresses in the MLflow UI: the runs view in "Model training" mode, a run's page.

MLflow 3's UI opens an experiment in its GenAI view; `workflowType=machine_learning` opens
the runs table directly. A `viewStateShareKey` names a view (columns of the runs table)
saved as an experiment tag, as the UI's own "Share" button does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlparse

DEFAULT_UI_ADDRESS = "http://127.0.0.1:5000"
VIEW_STATE_TAG_PREFIX = "mlflow.sharedViewState."  # the UI's own prefix for shared views
VIEW_KEY = "harness-compare"


def ui_address(tracking_uri: str) -> str:
    """Where the UI for `tracking_uri` is: the server itself, else `harness ui`'s default."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI_ADDRESS


def runs_view_url(address: str, experiment_id: str, *, view_key: str | None = VIEW_KEY) -> str:
    """The experiment's runs table, in "Model training" mode, with the compared columns."""
    url = f"{address}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return f"{url}&viewStateShareKey={view_key}" if view_key else url


def run_url(address: str, experiment_id: str, run_id: str) -> str:
    """A run's page."""
    return f"{address}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def compare_view_state(
    params: Sequence[str],
    metrics: Sequence[str],
    *,
    order_by: str | None = None,
    ascending: bool = True,
) -> str:
    """The shared-view JSON that shows `metrics` (the main one first) and `params` as
    runs-table columns, the rows sorted by the metric `order_by`, best first."""
    # Of the UI's own attribute columns only the models (Dataset and User are wide, and would
    # push the metrics off an ordinary screen), then the compared metrics and params.
    columns = ["attributes.`Models`"]
    columns += [f"metrics.`{name}`" for name in metrics] + [f"params.`{name}`" for name in params]
    state: dict[str, object] = {"selectedColumns": columns, "viewMaximized": False}
    if order_by is not None:
        state.update(orderByKey=f"metrics.`{order_by}`", orderByAsc=ascending)
    return json.dumps(state)


def compare_url(address: str, run_ids: Sequence[str], experiment_ids: Sequence[str]) -> str:
    """MLflow's compare page of these runs (what the runs table's Compare button opens)."""
    from urllib.parse import quote

    runs = quote(json.dumps(list(run_ids), separators=(",", ":")))
    experiments = quote(json.dumps(sorted(set(experiment_ids)), separators=(",", ":")))
    return f"{address}/#/compare-runs?runs={runs}&experiments={experiments}"
