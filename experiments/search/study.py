"""An Optuna study for a `search:` section: its storage, sampler and pruner, checked first.

Storage: by default Optuna's journal storage in a file, `searches/<study>/journal.log` (one
machine, no server, safe under several processes); `--storage` takes an Optuna RDB URL
(`postgresql+psycopg://...` for several machines, with heartbeats) or another journal file
(`journal:///path/journal.log`). SQLite is refused with more than one slot: its single writer
lock gives "database is locked" under concurrent trials.

The sampler and pruner settings are stored in the study's user attributes, so a resumed
search (`harness search` again, or `harness worker` on another machine) rebuilds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from experiments.config.search_schema import SearchSection
from experiments.config.urls import postgres_driver_problem, redact
from experiments.errors import UsageError
from experiments.search import optuna_internals
from experiments.search.space import grid

SETTINGS_ATTR = "harness.search"  # the study's user attribute holding `search:` as JSON
PARENT_ATTR = "harness.mlflow_parent_run_id"  # the study's parent MLflow run
STATE_TAG = "harness.trial_state"  # a trial run's end: COMPLETE, PRUNED, FAIL
VALUE_TAG = "harness.trial_value"  # a complete trial run's value(s) told to Optuna
RUN_ATTR = "harness.run_id"  # a trial's user attribute: its MLflow run (for a retry)
ERROR_ATTR = "harness.error"  # a trial's user attribute: why it failed
RETRY_ATTR = "harness.retry_of"  # a trial's user attribute: the trial number it retries
TARGET_ATTR = "harness.n_trials"  # the study's user attribute: trials wanted in all (None: no end)
BASE_ATTR = "harness.base_config"  # the study's user attribute: the trials' base config


def default_storage(study: str) -> str:
    return f"journal:///{Path('searches', study, 'journal.log').resolve()}"


def open_storage(url: str, *, slots: int) -> Any:
    """The Optuna storage for `url`, reachable; a UsageError (one line) when it is not."""
    import optuna

    if url.startswith("grpc://"):  # a search driver's proxy (`experiments.search.launch.reach`)
        from experiments.search.launch.reach import open_grpc_storage

        return open_grpc_storage(url)
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as error:
            raise UsageError(
                f"--storage: cannot use the journal file '{path}' ({error.strerror}). Point it "
                "at a writable file, e.g. --storage journal:///tmp/searches/study/journal.log"
            ) from None
        return optuna.storages.JournalStorage(backend)
    if url.startswith("sqlite") and slots > 1:
        raise UsageError(
            f"--storage {redact(url)}: SQLite takes one writer at a time, so {slots} slots "
            "writing trials at once fail with 'database is locked'. Leave --storage out (a "
            "journal file in searches/<study>/), or use PostgreSQL: "
            "--storage postgresql+psycopg://USER:PASSWORD@HOST/DB"
        )
    problem = postgres_driver_problem(url, "--storage")
    if problem is not None:
        raise UsageError(problem)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=10 if not url.startswith("sqlite") else None,
                grace_period=60 if not url.startswith("sqlite") else None,
                engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None,
            )
    except Exception as error:  # unreachable host, bad credentials, unknown dialect
        summary = (str(error).strip().splitlines() or [repr(error)])[0][:200]
        raise UsageError(
            f"--storage {redact(url)}: cannot open the Optuna storage ({summary}). Check the "
            "URL and that the database is reachable, e.g. "
            "--storage postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ) from None


def sampler(search: SearchSection) -> Any:
    import optuna

    seed, extra = search.seed, dict(search.sampler_params)
    samplers = optuna.samplers
    try:
        if search.sampler == "tpe":
            return samplers.TPESampler(seed=seed, **extra)
        if search.sampler == "random":
            return samplers.RandomSampler(seed=seed)
        if search.sampler == "cmaes":
            return samplers.CmaEsSampler(seed=seed, **extra)
        if search.sampler == "gp":
            return samplers.GPSampler(seed=seed, **extra)
        if search.sampler == "qmc":
            return samplers.QMCSampler(seed=seed, **extra)
        if search.sampler == "grid":
            return samplers.GridSampler(grid(search.space), seed=seed)
        return samplers.NSGAIISampler(seed=seed, **extra)
    except TypeError as error:
        raise UsageError(
            f"search.sampler_params for {search.sampler}: {error}. Use the arguments of "
            f"Optuna's {search.sampler} sampler"
        ) from None


def pruner(search: SearchSection) -> Any:
    import optuna

    spec, pruners = search.pruner, optuna.pruners
    try:
        if spec.name == "none":
            built = pruners.NopPruner()
        elif spec.name == "median":
            built = pruners.MedianPruner(**spec.params)
        elif spec.name == "asha":
            built = pruners.SuccessiveHalvingPruner(**spec.params)
        else:
            built = pruners.HyperbandPruner(**spec.params)
    except TypeError as error:
        raise UsageError(
            f"search.pruner.params for {spec.name}: {error}. Use the arguments of Optuna's "
            f"{spec.name} pruner"
        ) from None
    if spec.patience is not None and spec.name != "none":
        built = pruners.PatientPruner(built, patience=spec.patience)
    return built


def check_sampler_available(search: SearchSection) -> None:
    """GP needs torch and scipy; CMA-ES the cmaes package; QMC scipy: say which to install."""
    needs = {"gp": ["torch", "scipy"], "cmaes": ["cmaes"], "qmc": ["scipy"]}.get(search.sampler)
    import importlib.util

    missing = [name for name in needs or [] if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(
            f"search.sampler {search.sampler} needs {', '.join(missing)}, not installed: "
            f"pip install {' '.join(missing)}, or pick tpe, random, grid or nsga2"
        )


def create_or_load(storage: Any, name: str, search: SearchSection) -> tuple[Any, bool]:
    """The study `name` (created if new, settings stored); whether it already existed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens

    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    settings = search.model_dump(mode="json", by_alias=True)
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage)
        stored = study.user_attrs.get(SETTINGS_ATTR)
        if stored is not None:  # rebuilt from what the study was started with
            search = SearchSection.model_validate(stored)
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=sampler(search), pruner=pruner(search)
            )
        return study, True
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler(search),
        pruner=pruner(search),
        directions=search.directions,
    )
    study.set_user_attr(SETTINGS_ATTR, json.loads(json.dumps(settings)))
    return study, False


def load_for_trial(storage: Any, name: str) -> Any:
    """The study as a trial process needs it: with the pruner it was created with (a trial
    decides itself, at each report, whether it is pruned)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        return study
    return optuna.load_study(
        study_name=name, storage=storage, pruner=pruner(SearchSection.model_validate(stored))
    )


@contextlib.contextmanager
def ask_lock(study: Any, journal: Path | None) -> Iterator[None]:
    """Held while a supervisor counts the study's trials and asks for one, so supervisors on
    several machines never ask for more than the target: a PostgreSQL advisory lock, or a
    file lock beside a journal file (one machine)."""
    if journal is not None:
        with open(journal.with_suffix(".ask-lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    engine = getattr(optuna_internals.backend(study), "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    from sqlalchemy import text

    key = int.from_bytes(hashlib.sha256(study.study_name.encode()).digest()[:7], "big")
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def counted_trials(study: Any) -> int:
    """The study's trials that count toward its target (a retry replaces the trial it retries)."""
    return sum(RETRY_ATTR not in t.user_attrs for t in study.get_trials(deepcopy=False))
