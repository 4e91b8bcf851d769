"""`harness compare RUN RUN [...]`: the params that differ and the final metrics side by side,
the best run marked, and MLflow's compare page of the same runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from experiments.errors import UsageError
from experiments.ui.compare_view import compared_metrics
from experiments.ui.links import compare_url, ui_address
from experiments.ui.numbers import readable
from experiments.ui.run_ids import resolve_run_id, short_ids
from experiments.ui.runs_table import differing_params, main_metric
from experiments.ui.text_table import Column, fit, listed, render, terminal_width


def compare_runs(
    tracking_uri: str, texts: Sequence[str], *, echo: Callable[[str], None] = print
) -> None:
    """Print the comparison of the runs named by `texts` (ids or unique prefixes).

    Raises:
        UsageError: fewer than two runs, or a name that is no run's.
    """
    import pandas as pd

    from experiments.tracking_setup import tracking_store

    if len(texts) < 2:
        raise UsageError(
            "harness compare: name at least two runs (ids or unique prefixes, as harness runs "
            "shows them), e.g. harness compare 3f2a9c1d 8b0c6141"
        )
    ids = list(dict.fromkeys(resolve_run_id(tracking_uri, text) for text in texts))
    store = tracking_store(tracking_uri, create=False)
    found = [store.get_run(run_id) for run_id in ids]
    params = pd.DataFrame([dict(run.data.params) for run in found])
    differing = differing_params(params)
    metrics = compared_metrics({key for run in found for key in run.data.metrics if "/" not in key})
    metric = main_metric(found, metrics)
    best = _best(found, metric)
    headers = [f"{'*' if i == best else ''}{s}" for i, s in enumerate(short_ids(ids))]
    rows: list[tuple[str, list[str]]] = [("name", [run.info.run_name or "" for run in found])]
    ordered = sorted(metrics, key=lambda m: (m != getattr(metric, "name", None), m))
    for name in ordered:
        rows.append((name, [readable(run.data.metrics.get(name), name) for run in found]))
    for name in differing:
        rows.append((name, [readable(run.data.params.get(name), name) for run in found]))
    columns = [Column("", [key for key, _ in rows], rank=0)]
    for index, header in enumerate(headers):
        cells = [values[index] for _, values in rows]
        columns.append(Column(header, cells, rank=0 if index < 2 else 1, right=True))
    kept, dropped = fit(columns, terminal_width())
    for line in render(kept):
        echo(line)
    if not differing:
        echo("the runs have the same params")
    if metric is not None and best is not None:
        echo(f"* best by {metric.described}")
    if dropped:
        echo(f"left out to fit the terminal: runs {listed([c.header for c in dropped])}")
    address = ui_address(tracking_uri)
    serving = "" if tracking_uri.startswith("http") else " (after harness ui)"
    echo(f"MLflow compare page{serving}:")
    echo(f"  {compare_url(address, ids, [run.info.experiment_id for run in found])}")


def _best(found: Sequence[Any], metric: Any) -> int | None:
    if metric is None:
        return None
    scored = [
        (run.data.metrics[metric.name], index)
        for index, run in enumerate(found)
        if metric.name in run.data.metrics
    ]
    if not scored:
        return None
    pick = max if metric.higher_is_better else min
    return pick(scored)[1]
