"""`harness search CONFIG`: an Optuna study over a config's `search:` section, every trial a
tracked MLflow child run of one parent run per study.

Everything bad input can break (the space, the sampler, the storage, the devices) is checked
before a study or a run exists.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.config.schema import ExperimentConfig
from experiments.config.search_schema import SearchSection
from experiments.config.urls import redact
from experiments.errors import UsageError
from experiments.search.launch.placement import LocalPlacement, Placement, choose
from experiments.search.parent import ParentRun, Refresher, best_trials
from experiments.search.space import apply
from experiments.search.study import (
    BASE_ATTR,
    RUN_ATTR,
    SETTINGS_ATTR,
    TARGET_ATTR,
    ask_lock,
    check_sampler_available,
    counted_trials,
    create_or_load,
    default_storage,
    open_storage,
)
from experiments.search.supervisor import Supervisor, TrialBrief


@dataclass(frozen=True)
class SearchResult:
    study: str
    storage: str
    parent_run_id: str
    counts: dict[str, int]
    best: dict[str, Any] | None  # number, values, params, run_id
    metrics: tuple[str, ...] = ()
    tracking_uri: str = ""
    experiment_id: str = ""

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
    dry_run: bool = False,
    launcher: str | None = None,
    ray_address: str | None = None,
    max_concurrent: int | None = None,
) -> SearchResult | None:
    """Run (or continue) the study of `config.search`; `n_trials` more trials when given,
    on this machine's `devices` or on a Ray cluster (`launcher`, `ray_address`).

    `dry_run`: check everything the search would (the space, sampler, devices, storage,
    tracking store, and the base config as a trial builds it), say so, and return None
    before any study or run exists."""
    from experiments.tracking_setup import resolve_tracking_uri, tracking_store

    search = _search_section(config)
    check_sampler_available(search)
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
    placement = choose(
        search.launcher,
        launcher=launcher,
        devices=devices,
        ray_address=ray_address,
        max_concurrent=max_concurrent,
    )
    try:
        if dry_run:
            _dry_run(config, storage_url, placement, tracking_uri, trials, echo)
            return None
        opened = open_storage(storage_url, slots=placement.direct_writers)
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
        runs = tracking_store(uri)
        parent = ParentRun.open(
            runs, study, search, experiment=config.tracking.experiment, storage=storage_url
        )
        return _supervise(
            study, opened, storage_url, base, placement, parent, existed=existed, echo=echo
        )
    finally:
        placement.close()


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

    from experiments.tracking_setup import resolve_tracking_uri, tracking_store

    placement = LocalPlacement(devices, None)
    opened = open_storage(storage, slots=2)  # never SQLite: several writers
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
    parent = ParentRun.open(
        tracking_store(uri), study, search, experiment=experiment, storage=storage
    )
    return _supervise(study, opened, storage, base, placement, parent, existed=True, echo=echo)


def _dry_run(
    config: ExperimentConfig,
    storage_url: str,
    placement: Placement,
    tracking_uri: str | None,
    trials: int | None,
    echo: Callable[[str], None],
) -> None:
    from experiments.quiet import import_tensorflow_quietly
    from experiments.run.checkpoints import check_writable
    from experiments.tracking_setup import check_reachable, resolve_tracking_uri
    from tracking.mlflow.store import sqlite_path

    if storage_url.startswith("journal://"):
        journal = Path(storage_url.removeprefix("journal://"))
        check_writable(journal.parent, key="--storage", example="journal:///tmp/s/journal.log")
    elif not storage_url.startswith("sqlite"):
        open_storage(storage_url, slots=2)  # reachable, with its tables
    uri = resolve_tracking_uri(tracking_uri, config.tracking.uri)
    check_reachable(uri, doing="cannot reach the MLflow store at")
    database = sqlite_path(uri)
    if database is not None and not database.is_file():
        check_writable(database.parent, key="--tracking-uri", example="sqlite:///mlflow.db")
    import_tensorflow_quietly()
    from experiments.run.prepare import prepare

    prepare(config)  # the base config, as each trial builds it with its own values
    echo(
        f"dry run: the search can start: {trials if trials is not None else 'unlimited'} "
        f"trials over {placement.description}, storage {redact(storage_url)}, "
        f"tracked at {uri}. No study and no run were created"
    )


def _supervise(
    study: Any,
    opened: Any,
    storage_url: str,
    base: dict[str, Any],
    placement: Placement,
    parent: ParentRun,
    *,
    existed: bool,
    echo: Callable[[str], None],
) -> SearchResult:
    name, search = study.study_name, parent.search
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
        f"{target if target is not None else 'unlimited'} trials over "
        f"{placement.description}; MLflow parent run {parent.run_id}"
    )
    reachable = placement.reachable(storage_url, opened, parent.runs.tracking_uri, folder)
    with (
        reachable as (trials_storage, trials_uri),
        _trial_display(target, echo) as (
            show,
            progress,
        ),
    ):
        brief = TrialBrief(base, trials_storage, trials_uri, parent.run_id, folder)
        supervisor = Supervisor(
            study,
            search,
            brief=brief,
            runs=parent.runs,
            launcher=placement.launcher,
            n_trials=target,
            timeout_s=None if search.timeout_minutes is None else search.timeout_minutes * 60,
            journal=journal,
            echo=show,
            progress=progress,
            after_trial=Refresher(parent.refresh),
        )
        try:
            error = supervisor.run()
        except KeyboardInterrupt:
            supervisor.stop_all()
            parent.close("KILLED")
            raise
        except Exception:  # the supervisor itself broke: its trials are stopped, not orphaned
            supervisor.stop_all()
            parent.close("FAILED")
            raise
    if error is not None:
        if existed:
            parent.refresh()
            parent.close("FAILED")
        else:  # bad input found by the first trial: leave no study and no parent run behind
            import optuna

            parent.discard()
            optuna.delete_study(study_name=name, storage=opened)
        raise UsageError(error)
    parent.refresh()
    # Under the ask lock: supervisors ending together would each register the same best run.
    with ask_lock(study, journal):
        registered = parent.register_best(search.register_as or name)
    if registered:
        echo(registered)
    parent.close("FINISHED")
    return SearchResult(
        name,
        redact(storage_url),
        parent.run_id,
        supervisor.counts,
        _best(study, search),
        metrics=tuple(search.metrics),
        tracking_uri=parent.runs.tracking_uri,
        experiment_id=str(parent.runs.get_run(parent.run_id).info.experiment_id),
    )


@contextmanager
def _trial_display(
    target: int | None, echo: Callable[[str], None]
) -> Iterator[tuple[Callable[[str], None], Callable[[int, str], None] | None]]:
    """Where the supervisor's lines and progress go: under a progress bar of trials when the
    output is a terminal (its lines print above the bar); a line per trial only, when piped."""
    if not sys.stdout.isatty():
        yield echo, None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("starting", total=target)
        yield (
            lambda line: bar.console.print(line, markup=False, highlight=False),
            lambda done, text: bar.update(task, completed=done, description=text),
        )


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


def _best(study: Any, search: SearchSection) -> dict[str, Any] | None:
    best = best_trials(study, search)
    if not best:
        return None
    first = best[0]
    return {
        "number": first.number,
        "values": first.values,
        "params": first.params,
        "run_id": first.user_attrs.get(RUN_ATTR),
    }
