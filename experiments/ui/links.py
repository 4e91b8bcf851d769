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


def compare_view_state(params: Sequence[str], metrics: Sequence[str]) -> str:
    """The shared-view JSON that shows `params` and `metrics` as runs-table columns."""
    # The UI's own attribute columns, then the compared params and metrics.
    columns = ["attributes.`Dataset`", "attributes.`Models`", "attributes.`User`"]
    columns += [f"params.`{name}`" for name in params] + [f"metrics.`{name}`" for name in metrics]
    return json.dumps({"selectedColumns": columns, "viewMaximized": False})
