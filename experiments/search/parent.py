"""The study's MLflow parent run: every trial is its child; it shows the search as a whole.

It holds `best_<metric>` (one point per finished trial), the best params (tags
`best.<path>`), the table of all trials (`trials.csv`) and Optuna's plots (HTML and PNG),
refreshed as trials end; for a two-metric study, the Pareto front. At the end the best
trial's model is registered under the study's name.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.config.search_schema import SearchSection
from experiments.config.urls import redact
from experiments.search.study import PARENT_ATTR, RUN_ATTR
from experiments.tracking_setup import user_name
from experiments.ui.compare_view import publish_compare_view

PLOTS = (
    "optimization_history",
    "param_importances",
    "parallel_coordinate",
    "intermediate_values",
)
PARETO_PLOTS = ("pareto_front",)  # a two-metric study: the trade-off between the metrics


class ParentRun:
    """The parent run `run_id` of `study` in the store `runs` (an `MlflowRuns`)."""

    def __init__(self, runs: Any, run_id: str, study: Any, search: SearchSection) -> None:
        self.runs, self.run_id, self.study, self.search = runs, run_id, study, search

    @classmethod
    def open(
        cls, runs: Any, study: Any, search: SearchSection, *, experiment: str, storage: str
    ) -> ParentRun:
        """The study's parent run, RUNNING again; created (and recorded in the study) when the
        study has none yet."""
        recorded = study.user_attrs.get(PARENT_ATTR)
        if recorded is not None:
            runs.set_status(recorded, "RUNNING")
            return cls(runs, str(recorded), study, search)
        name = study.study_name
        run_id = runs.create_run(
            runs.experiment_id(experiment),
            run_name=f"search {name}",
            tags={
                "harness.study": name,
                "harness.role": "study",
                "harness.storage": redact(storage),
                "harness.search_metric": ",".join(search.metrics),
                "harness.search_direction": ",".join(search.directions),
                "mlflow.user": user_name(),
                "mlflow.source.type": "LOCAL",
                DESCRIPTION_TAG: describe(name, search, best=None, finished=0),
            },
        )
        runs.log_params(run_id, search_params(search))
        # The experiment's runs table opens sorted by the search's metric, best first.
        publish_compare_view(
            runs.tracking_uri,
            runs.experiment_id(experiment),
            search.metrics[:1],
            sort=(search.metrics[0], search.directions[0] == "minimize"),
        )
        study.set_user_attr(PARENT_ATTR, run_id)
        return cls(runs, run_id, study, search)

    def refresh(self, *, plots: bool = True) -> None:
        """The best value and params, the trials table and (with `plots`) the plots."""
        runs, run_id, search = self.runs, self.run_id, self.search
        finished = [t for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()]
        best = best_trials(self.study, search)
        if best:
            for metric, value in zip(search.metrics, best[0].values, strict=True):
                key = f"best_{metric}"
                if len(finished) not in {m.step for m in runs.metric_history(run_id, key)}:
                    runs.log_metric(run_id, key, value, step=len(finished))
            self._show_best(best, len(finished))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "trials.csv"
            self.study.trials_dataframe().to_csv(path, index=False)
            runs.log_artifact(run_id, path)
            if plots and finished:
                folder = Path(tmp) / "plots"
                folder.mkdir()
                if write_plots(self.study, folder):
                    runs.log_artifact(run_id, folder, artifact_path="plots")

    def _show_best(self, best: list[Any], finished: int) -> None:
        """Tags `best.<path>` of the best trial only (an earlier best's params removed), its
        final metrics under their own names (the parent's row reads as the best run's), and
        the description."""
        runs, run_id = self.runs, self.run_id
        tags = {f"best.{path}": str(value) for path, value in best[0].params.items()}
        tags["best.trial_number"] = str(best[0].number)
        best_run = best[0].user_attrs.get(RUN_ATTR)
        if best_run is not None:
            tags["best.run_id"] = str(best_run)
        if len(self.search.metrics) > 1:  # no single best: the trials no other beats on both
            tags["best.pareto_front"] = ",".join(map(str, sorted(t.number for t in best)))
        tags[DESCRIPTION_TAG] = describe(
            self.study.study_name, self.search, best=best[0], finished=finished
        )
        current = runs.get_run(run_id).data
        runs.delete_tags(
            run_id, [k for k in current.tags if k.startswith("best.") and k not in tags]
        )
        runs.set_tags(run_id, tags)
        if best_run is None:
            return
        try:
            metrics = runs.get_run(str(best_run)).data.metrics
        except Exception:  # noqa: BLE001 - the best trial's run is not readable: keep the rest
            return
        for key, value in metrics.items():
            if "/" not in key and current.metrics.get(key) != value:  # epoch-level only
                runs.log_metric(run_id, key, value, step=finished)

    def register_best(self, name: str) -> str | None:
        """Register the best trial's model as a new version of `name` (if it is not already
        the latest); the line to print, or None."""
        if len(self.study.directions) > 1:
            return None  # no single best to register: the Pareto front is tagged instead
        best = best_trials(self.study, self.search)
        run_id = best[0].user_attrs.get(RUN_ATTR) if best else None
        if run_id is None:
            return None
        version = self.runs.register_model(
            name,
            run_id=run_id,
            model_tags={"harness.study": self.study.study_name},
            version_tags={"harness.trial_number": str(best[0].number)},
        )
        if version is None:
            return None
        return f"registered the best trial's model as '{name}' version {version}"

    def close(self, status: str) -> None:
        self.runs.set_status(self.run_id, status)

    def discard(self) -> None:
        """Delete the parent run and its trials' runs: a search stopped by bad input leaves
        nothing behind."""
        parent = self.runs.get_run(self.run_id)
        children = self.runs.child_runs(parent)
        self.runs.delete_runs([run.info.run_id for run in [*children, parent]])


DESCRIPTION_TAG = "mlflow.note.content"  # the run's description in the MLflow UI


def search_params(search: SearchSection) -> dict[str, str]:
    """The search's settings as the parent run's params: what was searched, and how."""
    params = {
        "search.metric": ",".join(search.metrics),
        "search.direction": ",".join(search.directions),
        "search.sampler": search.sampler,
        "search.pruner": search.pruner.name,
        "search.n_trials": str(search.n_trials) if search.n_trials is not None else "unlimited",
    }
    if search.timeout_minutes is not None:
        params["search.timeout_minutes"] = str(search.timeout_minutes)
    for path, param in search.space.items():
        params[f"space.{path}"] = space_text(param)
    return params


def space_text(param: Any) -> str:
    """`float [0.001, 0.1] log`, `categorical [adam, sgd]`, `int [16, 64] step 16`."""
    for kind in ("float", "int", "categorical"):
        bounds = param.bounds_or_choices(kind)
        if bounds is not None:
            text = f"{kind} [{', '.join(_text(b) for b in bounds)}]"
            break
    if param.log:
        text += " log"
    if param.step is not None:
        text += f" step {_text(param.step)}"
    if param.when:
        text += " when " + ", ".join(f"{k}={_text(v)}" for k, v in param.when.items())
    return text


def describe(name: str, search: SearchSection, *, best: Any, finished: int) -> str:
    """The parent run's description: what was searched, and the best so far."""
    paths = ", ".join(search.space)
    metrics = " and ".join(
        f"{'max' if d == 'maximize' else 'min'}imize {m}"
        for m, d in zip(search.metrics, search.directions, strict=True)
    )
    lines = [
        f"Optuna search '{name}' ({search.sampler} sampler, {search.pruner.name} pruner) to "
        f"{metrics} over {paths}. Each trial is a child run of this one.",
    ]
    if best is None:
        lines.append("No trial has finished yet.")
    else:
        values = ", ".join(
            f"{m} {_text(v)}" for m, v in zip(search.metrics, best.values, strict=True)
        )
        params = ", ".join(f"{k}={_text(v)}" for k, v in best.params.items())
        run = best.user_attrs.get(RUN_ATTR)
        lines.append(
            f"Best of {finished} finished trials: trial {best.number}, {values} "
            f"({params}){f', run {run}' if run else ''}."
        )
    return "\n\n".join(lines)


def _text(value: Any) -> str:
    """A value as a person reads it: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def best_trials(study: Any, search: SearchSection) -> list[Any]:
    """The best trial (one metric), or the Pareto front, best first; [] before any."""
    if len(search.metrics) > 1:
        return list(study.best_trials)
    try:
        return [study.best_trial]
    except ValueError:
        return []


class Refresher:
    """After each trial: the parent's best value and table; its plots at most every 30 s, and
    no more often than keeps drawing them (seconds of CPU as the study grows) to 5 % of the
    supervisor's time, so the slots keep the cores."""

    def __init__(
        self,
        refresh: Callable[..., None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh, self.clock = refresh, clock
        self.next_plot_at = 0.0

    def __call__(self) -> None:
        started = self.clock()
        plots = started >= self.next_plot_at
        self.refresh(plots=plots)
        if plots:
            took = self.clock() - started
            self.next_plot_at = started + max(30.0, 20 * took)


def write_plots(study: Any, folder: Path) -> list[Path]:
    """Write each of Optuna's plots the study has data for into `folder` (interactive HTML
    and a PNG of its matplotlib backend); the files written.

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
                # plotly.js embedded: the plot renders offline and inside the MLflow UI's
                # artifact viewer (no CDN, no file beside it to resolve).
                figure.write_html(str(html), include_plotlyjs=True)
                written.append(html)
                axes = getattr(static, f"plot_{name}")(study)
                png = folder / f"{name}.png"
                axes.figure.savefig(png, dpi=100, bbox_inches="tight")
                plt.close(axes.figure)
                written.append(png)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # not enough finished trials for this one yet
    return written
