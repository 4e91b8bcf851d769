"""`harness search CONFIG`: an Optuna study over a config's `search:` section, every trial a
tracked MLflow child run of one parent run per study.

Everything bad input can break (the space, the sampler, the storage, the devices) is checked
before a study or a run exists.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config.schema import ExperimentConfig
from experiments.config.search_schema import SearchSection
from experiments.config.urls import redact
from experiments.errors import UsageError
from experiments.search.space import apply
from experiments.search.study import (
    BASE_ATTR,
    PARENT_ATTR,
    SETTINGS_ATTR,
    TARGET_ATTR,
    ask_lock,
    check_sampler_available,
    counted_trials,
    create_or_load,
    default_storage,
    open_storage,
)
from experiments.search.supervisor import Supervisor, parse_devices


@dataclass(frozen=True)
class SearchResult:
    study: str
    storage: str
    parent_run_id: str
    counts: dict[str, int]
    best: dict[str, Any] | None  # number, values, params

    @property
    def counts_text(self) -> str:
        """`5 complete, 1 pruned, 0 failed`"""
        return ", ".join(f"{n} {state}" for state, n in self.counts.items())


def run_search(
    config: ExperimentConfig,
    *,
    devices: str | None = None,
    n_trials: int | None = None,
    study_name: str | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    echo: Callable[[str], None] = print,
) -> SearchResult:
    """Run (or continue) the study of `config.search`; `n_trials` more trials when given."""
    from experiments.run.tracking_setup import resolve_tracking_uri

    search = _search_section(config)
    check_sampler_available(search)
    slots = parse_devices(devices)
    name = study_name or search.study or config.tracking.experiment
    base = config.model_dump(mode="json", by_alias=True, exclude={"search"})
    _check_paths(base, search)
    trials = n_trials if n_trials is not None else search.n_trials
    if trials is None and search.timeout_minutes is None:
        raise UsageError(
            "search: neither search.n_trials nor search.timeout_minutes is set, so the search "
            "would never end: set one, e.g. search.n_trials=20 or --n-trials 20"
        )
    storage_url = storage or default_storage(name)
    opened = open_storage(storage_url, slots=len(slots))
    uri = resolve_tracking_uri(tracking_uri, config.tracking.uri)
    study, existed = create_or_load(opened, name, search)
    if not existed:
        study.set_user_attr(BASE_ATTR, base)
    # --n-trials adds that many; otherwise the study runs until it holds search.n_trials.
    stored = study.user_attrs.get(TARGET_ATTR)
    if n_trials is not None:
        target: int | None = counted_trials(study) + n_trials
    else:
        target = None if trials is None else max(trials, stored or 0)
    study.set_user_attr(TARGET_ATTR, target)
    parent = _parent_run(study, uri, config.tracking.experiment, name, storage_url, search)
    return _supervise(
        study, opened, storage_url, base, search, slots, uri, parent, existed=existed, echo=echo
    )


def run_worker(
    *,
    study_name: str,
    storage: str,
    devices: str | None = None,
    tracking_uri: str | None = None,
    echo: Callable[[str], None] = print,
) -> SearchResult:
    """Join the running study `study_name` in `storage` (from another machine): its search
    settings and base config are the study's own; it runs trials until the study's target."""
    import optuna

    from experiments.run.tracking_setup import resolve_tracking_uri

    slots = parse_devices(devices)
    opened = open_storage(storage, slots=max(len(slots), 2))  # never SQLite: several writers
    try:
        study = optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        names = ", ".join(optuna.get_all_study_names(opened)) or "none"
        raise UsageError(
            f"harness worker: no study '{study_name}' in {redact(storage)} (it holds: {names}). "
            "Start it with harness search CONFIG --storage URL, then join it by that name"
        ) from None
    settings, base = study.user_attrs.get(SETTINGS_ATTR), study.user_attrs.get(BASE_ATTR)
    if settings is None or base is None:
        raise UsageError(
            f"harness worker: study '{study_name}' was not started by harness search (it has "
            "no search settings): start one with harness search CONFIG --storage URL"
        )
    search = SearchSection.model_validate(settings)
    study, _ = create_or_load(opened, study_name, search)  # with its sampler and pruner
    uri = resolve_tracking_uri(tracking_uri, None)
    experiment = base.get("tracking", {}).get("experiment", study_name)
    parent = _parent_run(study, uri, experiment, study_name, storage, search)
    return _supervise(
        study, opened, storage, base, search, slots, uri, parent, existed=True, echo=echo
    )


def _supervise(
    study: Any,
    opened: Any,
    storage_url: str,
    base: dict[str, Any],
    search: SearchSection,
    slots: list[Any],
    uri: str,
    parent: str,
    *,
    existed: bool,
    echo: Callable[[str], None],
) -> SearchResult:
    name = study.study_name
    target = study.user_attrs.get(TARGET_ATTR)
    folder = Path("searches", name)
    folder.mkdir(parents=True, exist_ok=True)
    journal = (
        Path(storage_url.removeprefix("journal://"))
        if storage_url.startswith("journal://")
        else None
    )
    echo(
        f"study '{name}' ({'continued' if existed else 'new'}) in {redact(storage_url)}: "
        f"{target if target is not None else 'unlimited'} trials over {len(slots)} slot(s) "
        f"({', '.join(s.name for s in slots)}); MLflow parent run {parent}"
    )
    supervisor = Supervisor(
        study=study,
        storage_url=storage_url,
        base=base,
        search=search,
        slots=slots,
        tracking_uri=uri,
        parent_run_id=parent,
        folder=folder,
        n_trials=target,
        timeout_s=None if search.timeout_minutes is None else search.timeout_minutes * 60,
        journal=journal,
        echo=echo,
        after_trial=_Refresher(study, uri, parent, search),
    )
    try:
        error = _run_with_progress(supervisor, target)
    except KeyboardInterrupt:
        supervisor.stop_all()
        _close_parent(uri, parent, "KILLED")
        raise
    except Exception:  # the supervisor itself broke: its trials are stopped, not orphaned
        supervisor.stop_all()
        _close_parent(uri, parent, "FAILED")
        raise
    if error is not None:
        if existed:
            _refresh_parent(study, uri, parent, search)
            _close_parent(uri, parent, "FAILED")
        else:  # bad input found by the first trial: leave no study and no parent run behind
            _discard(opened, name, uri, parent)
        raise UsageError(error)
    _refresh_parent(study, uri, parent, search)
    # Under the ask lock: supervisors ending together would each register the same best run.
    with ask_lock(study._storage, name, journal):
        registered = _register_best(study, uri, search.register_as or name)
    if registered:
        echo(registered)
    _close_parent(uri, parent, "FINISHED")
    return SearchResult(name, redact(storage_url), parent, supervisor.counts, _best(study, search))


def _run_with_progress(supervisor: Supervisor, target: int | None) -> str | None:
    """`supervisor.run()`, under a progress bar of trials when the output is a terminal (its
    lines print above the bar); a line per trial only, when piped."""
    import sys

    if not sys.stdout.isatty():
        return supervisor.run()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task(supervisor.status(), total=target)
        supervisor.echo = lambda line: bar.console.print(line, markup=False, highlight=False)
        supervisor.progress = lambda done, text: bar.update(task, completed=done, description=text)
        return supervisor.run()


def _search_section(config: ExperimentConfig) -> SearchSection:
    if config.search is None:
        raise UsageError(
            "the config has no search: section, so there is nothing to search. Add one, e.g. "
            "search: {metric: val_accuracy, direction: maximize, n_trials: 10, space: "
            "{optimizer.learning_rate: {float: [1.0e-4, 1.0e-1], log: true}}} (see "
            "experiments/configs/digits_cnn_search.yaml)"
        )
    return config.search


def _check_paths(base: dict[str, Any], search: SearchSection) -> None:
    """Each searched path is a config key (free-form `params` mappings accept any name)."""
    from pydantic import ValidationError

    for path, param in search.space.items():
        sample = (
            param.categorical[0]
            if param.categorical is not None
            else (param.float_ or param.int_)[0]  # type: ignore[index]
        )
        try:
            ExperimentConfig.model_validate(apply(base, {path: sample}))
        except ValidationError as error:
            unknown = [e for e in error.errors() if e["type"] == "extra_forbidden"]
            if unknown:
                where = ".".join(map(str, unknown[0]["loc"]))
                raise UsageError(
                    f"search.space: '{path}' is not a config key ({where} is unknown). Map "
                    "config paths to distributions, e.g. optimizer.learning_rate or "
                    "model.params.dropout"
                ) from None


def _parent_run(
    study: Any, uri: str, experiment: str, name: str, storage: str, search: SearchSection
) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is not None:
        client.update_run(parent, status="RUNNING")
        return str(parent)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(
        experiment_id,
        run_name=f"search {name}",
        tags={
            "harness.study": name,
            "harness.role": "study",
            "harness.storage": redact(storage),
            "harness.search_metric": ",".join(search.metrics),
            "harness.search_direction": ",".join(search.directions),
        },
    )
    study.set_user_attr(PARENT_ATTR, run.info.run_id)
    return str(run.info.run_id)


def _best(study: Any, search: SearchSection) -> dict[str, Any] | None:
    best = study.best_trials if len(search.metrics) > 1 else _single_best(study)
    if not best:
        return None
    first = best[0]
    return {"number": first.number, "values": first.values, "params": first.params}


def _single_best(study: Any) -> list[Any]:
    try:
        return [study.best_trial]
    except ValueError:
        return []


class _Refresher:
    """After each trial: the parent's best value and table; its plots at most every 30 s, and
    no more often than keeps drawing them (seconds of CPU as the study grows) to 5 % of the
    supervisor's time, so the slots keep the cores."""

    def __init__(self, study: Any, uri: str, parent: str, search: SearchSection) -> None:
        self.args = (study, uri, parent, search)
        self.next_plot_at = 0.0

    def __call__(self) -> None:
        started = time.monotonic()
        plots = started >= self.next_plot_at
        _refresh_parent(*self.args, plots=plots)
        if plots:
            took = time.monotonic() - started
            self.next_plot_at = started + max(30.0, 20 * took)


def _refresh_parent(
    study: Any, uri: str, parent: str, search: SearchSection, *, plots: bool = True
) -> None:
    """The parent run's best value (a metric, one point per finished trial), best params
    (tags `best.<path>`) and the table of all trials (`trials.csv`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    best = _best(study, search)
    if best is not None:
        for metric, value in zip(search.metrics, best["values"], strict=True):
            key = f"best_{metric}"
            if len(finished) not in {m.step for m in client.get_metric_history(parent, key)}:
                client.log_metric(parent, key, value, step=len(finished))
        for path, value in best["params"].items():
            client.set_tag(parent, f"best.{path}", str(value))
        client.set_tag(parent, "best.trial_number", str(best["number"]))
        if len(search.metrics) > 1:  # no single best: the trials no other beats on both
            front = sorted(t.number for t in study.best_trials)
            client.set_tag(parent, "best.pareto_front", ",".join(map(str, front)))
    frame = study.trials_dataframe()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.csv"
        frame.to_csv(path, index=False)
        client.log_artifact(parent, str(path))
        if plots and finished:
            from experiments.search.plots import write_plots

            folder = Path(tmp) / "plots"
            folder.mkdir()
            if write_plots(study, folder):
                client.log_artifacts(parent, str(folder), artifact_path="plots")


def _register_best(study: Any, uri: str, name: str) -> str | None:
    """Register the best trial's model as a new version of `name` (if it is not already the
    latest); the line to print, or None."""
    from mlflow.tracking import MlflowClient

    from experiments.search.study import RUN_ATTR

    if len(study.directions) > 1:
        return None  # no single best to register: the Pareto front is tagged on the parent
    best = _single_best(study)
    run_id = best[0].user_attrs.get(RUN_ATTR) if best else None
    if run_id is None:
        return None
    client = MlflowClient(uri)
    experiment_id = client.get_run(run_id).info.experiment_id
    models = [
        m
        for m in client.search_logged_models([experiment_id])
        if m.source_run_id == run_id and m.name == "model"
    ]
    if not models:
        return None
    model = models[-1]
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except Exception:
        versions = []
    if any(v.run_id == run_id for v in versions):
        return None  # already the registered best
    if not versions:
        from mlflow.exceptions import MlflowException

        try:
            client.create_registered_model(name, tags={"harness.study": study.study_name})
        except MlflowException as error:  # registered already, with no versions yet
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    version = client.create_model_version(
        name,
        source=model.artifact_location,  # not models:/: resolved against the global URI
        run_id=run_id,
        model_id=model.model_id,
        tags={"harness.trial_number": str(best[0].number)},
    )
    return f"registered the best trial's model as '{name}' version {version.version}"


def _discard(storage: Any, name: str, uri: str, parent: str) -> None:
    import optuna
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment_id = client.get_run(parent).info.experiment_id
    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    for run in [*children, client.get_run(parent)]:
        client.delete_run(run.info.run_id)
    optuna.delete_study(study_name=name, storage=storage)


def _close_parent(uri: str, parent: str, status: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).set_terminated(parent, status=status)
