"""Read-only questions about a store, for tables and links: recent runs, a study's trials,
the experiment worked on last."""

from __future__ import annotations

from typing import Any

from tracking.mlflow.runs import MlflowRuns


class ExperimentNotFound(LookupError):
    """No experiment by that name; `known` lists the names there are."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no experiment named '{name}'")
        self.name, self.known = name, known


def recent_runs(runs: MlflowRuns, experiment: str | None, *, limit: int) -> list[Any]:
    """The `limit` most recently started runs of `experiment` (all experiments when None).

    Raises:
        ExperimentNotFound: `experiment` does not exist.
    """
    if experiment is not None:
        found = runs.find_experiment(experiment)
        if found is None:
            raise ExperimentNotFound(experiment, [e.name for e in runs.experiments()])
        ids = [found.experiment_id]
    else:
        ids = [e.experiment_id for e in runs.experiments()]
    return runs.search_runs(ids, max_results=limit, newest_first=True)


def tagged_runs(runs: MlflowRuns, tags: dict[str, str]) -> list[Any]:
    """The runs of every experiment carrying all of `tags`."""
    condition = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    ids = [e.experiment_id for e in runs.experiments()]
    return runs.search_runs(ids, filter_string=condition)


def latest_experiment(runs: MlflowRuns) -> Any | None:
    """The experiment of the most recent run, else the newest experiment, else None."""
    experiments = runs.experiments(newest_first=True)
    if not experiments:
        return None
    latest = runs.search_runs(
        [e.experiment_id for e in experiments], max_results=1, newest_first=True
    )
    if not latest:
        return experiments[0]
    return next(e for e in experiments if e.experiment_id == latest[0].info.experiment_id)


def runs_with_prefix(runs: MlflowRuns, prefix: str, *, limit: int = 10) -> list[Any]:
    """Runs of any experiment whose id starts with `prefix` (at most `limit`)."""
    ids = [e.experiment_id for e in runs.experiments()]
    safe = "".join(c for c in prefix if c.isalnum())  # run ids are hex: nothing to escape
    return runs.search_runs(
        ids, filter_string=f"attributes.run_id LIKE '{safe}%'", max_results=limit
    )
