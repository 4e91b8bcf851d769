"""The few private Optuna pieces the search reuses, kept in one place.

The search asks and tells trials itself, one process per trial, so it needs what Optuna keeps
for `study.optimize`: a study's storage (`study._storage`, Optuna's cache in front of an RDB
storage, `_CachedStorage._backend`), a trial's id in that storage (`trial._trial_id`), a
`Trial` object for a trial another process asked for, and the heartbeat settings an
`RDBStorage` holds (Optuna beats only inside `study.optimize`). Optuna is pinned to a major
version in `pyproject.toml`; if these move, only this module changes, and
`tests/experiments/search/test_optuna_internals.py` names what broke.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "backend",
    "configure_heartbeats",
    "frozen_trial",
    "has_heartbeats",
    "record_heartbeat",
    "storage",
    "trial_for",
    "trial_id",
]


def storage(study: Any) -> Any:
    """The storage a study reads and writes through (Optuna's cache wrapper, if any)."""
    return study._storage


def backend(study_or_storage: Any) -> Any:
    """The storage itself, behind Optuna's cache: an RDB storage holds the SQLAlchemy engine
    (`.engine`) and the heartbeat settings; a journal storage is its own backend."""
    from optuna.storages._cached_storage import _CachedStorage

    store = getattr(study_or_storage, "_storage", study_or_storage)
    return store._backend if isinstance(store, _CachedStorage) else store


def trial_id(trial: Any) -> int:
    """A trial's id in its storage (its `number` counts within the study)."""
    return int(trial._trial_id)


def frozen_trial(study: Any, trial_id: int) -> Any:
    """The `FrozenTrial` with storage id `trial_id`, read afresh."""
    return study._storage.get_trial(trial_id)


def trial_for(study: Any, trial_id: int) -> Any:
    """A `Trial` to report to, prune and tell through, for a trial a supervisor asked for in
    another process."""
    import optuna

    return optuna.trial.Trial(study, trial_id)


def has_heartbeats(study: Any) -> bool:
    """Whether the study's storage keeps heartbeats (an RDB storage given an interval)."""
    return getattr(backend(study), "heartbeat_interval", None) is not None


def configure_heartbeats(
    study: Any,
    *,
    interval_s: float,
    grace_period_s: float,
    on_stale: Callable[[Any, Any], None],
) -> None:
    """Beat every `interval_s`; a trial without a beat for `grace_period_s` is stale, and
    `optuna.storages.fail_stale_trials` calls `on_stale(study, frozen_trial)` for it."""
    store = backend(study)
    store.heartbeat_interval = interval_s
    store.grace_period = grace_period_s
    store.heartbeat_stale_trial_callback = on_stale


def record_heartbeat(study: Any, trial_id: int) -> None:
    """One beat for the trial: it is alive."""
    study._storage.record_heartbeat(trial_id)
