"""The study's plots, for its parent MLflow run: Optuna's visualizations as interactive HTML
(plotly) and PNG (its matplotlib backend) — optimization history, parameter importances,
parallel coordinates, intermediate values; for a two-metric study, its Pareto front."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

PLOTS = (
    "optimization_history",
    "param_importances",
    "parallel_coordinate",
    "intermediate_values",
)
PARETO_PLOTS = ("pareto_front",)  # a two-metric study: the trade-off between the metrics


def write_plots(study: Any, folder: Path) -> list[Path]:
    """Write each plot the study has data for into `folder`; the files written.

    A plot Optuna cannot draw yet (importances need two finished trials, intermediate values
    a reported epoch) is left out until it can.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt
    import optuna.visualization as interactive
    import optuna.visualization.matplotlib as static

    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is "experimental" in Optuna
        for name in PLOTS if len(study.directions) == 1 else PARETO_PLOTS:
            try:
                figure = getattr(interactive, f"plot_{name}")(study)
                html = folder / f"{name}.html"
                figure.write_html(str(html), include_plotlyjs="cdn")
                written.append(html)
                axes = getattr(static, f"plot_{name}")(study)
                png = folder / f"{name}.png"
                axes.figure.savefig(png, dpi=100, bbox_inches="tight")
                plt.close(axes.figure)
                written.append(png)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # not enough finished trials for this one yet
    return written
