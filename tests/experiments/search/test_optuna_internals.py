"""The contract of every private Optuna piece the search uses (`optuna_internals`), on real
storages: a journal file, and PostgreSQL behind Optuna's cache with heartbeats."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from experiments.search import optuna_internals
from experiments.search.study import open_storage

pytestmark = pytest.mark.door("optuna", "experiments/search/optuna_internals.py")


@pytest.fixture(params=["journal", "postgresql"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "journal":
        url = f"journal:///{tmp_path / 'journal.log'}"
    else:
        url = request.getfixturevalue("postgres_databases")[0]
    optuna.create_study(study_name="door", storage=open_storage(url, slots=1))
    return optuna.load_study(study_name="door", storage=open_storage(url, slots=1))


def test_a_trial_asked_here_is_found_by_its_id_and_told_through_another_trial_object(
    study: Any,
) -> None:
    asked = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial_id = optuna_internals.trial_id(asked)
    assert isinstance(trial_id, int)
    frozen = optuna_internals.frozen_trial(study, trial_id)
    assert (frozen.number, frozen.state.name) == (asked.number, "RUNNING")
    # What a trial process does with the id its supervisor wrote down:
    elsewhere = optuna_internals.trial_for(study, trial_id)
    elsewhere.report(0.25, step=1)
    elsewhere.set_user_attr("harness.run_id", "r")
    study.tell(elsewhere.number, 0.5)
    frozen = optuna_internals.frozen_trial(study, trial_id)
    assert (frozen.state.name, frozen.value, frozen.intermediate_values) == (
        "COMPLETE",
        0.5,
        {1: 0.25},
    )
    assert frozen.user_attrs == {"harness.run_id": "r"}


def test_the_storage_behind_the_cache_holds_the_engine_and_the_heartbeats(study: Any) -> None:
    backend = optuna_internals.backend(study)
    assert optuna_internals.backend(optuna_internals.storage(study)) is backend
    if isinstance(backend, optuna.storages.JournalStorage):
        assert not optuna_internals.has_heartbeats(study)
        return
    assert backend is not optuna_internals.storage(study)  # Optuna's cache in front
    assert backend.engine.dialect.name == "postgresql"
    assert optuna_internals.has_heartbeats(study)


def test_a_trial_whose_beats_stop_is_failed_and_handed_to_the_callback(
    postgres_databases: list[str],
) -> None:
    url = postgres_databases[0]
    optuna.create_study(study_name="beats", storage=open_storage(url, slots=1))
    study = optuna.load_study(study_name="beats", storage=open_storage(url, slots=1))
    stale: list[int] = []
    optuna_internals.configure_heartbeats(
        study, interval_s=1, grace_period_s=1, on_stale=lambda s, t: stale.append(t.number)
    )
    alive, silent = study.ask(), study.ask()
    optuna_internals.record_heartbeat(study, optuna_internals.trial_id(silent))
    time.sleep(2.5)
    optuna_internals.record_heartbeat(study, optuna_internals.trial_id(alive))
    optuna.storages.fail_stale_trials(study)
    assert stale == [silent.number]
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {alive.number: "RUNNING", silent.number: "FAIL"}
