"""The study's ask lock: supervisors on several machines count and ask one at a time."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import optuna

from experiments.search import optuna_internals
from experiments.search.study import ask_lock, open_storage


def _held_one_at_a_time(storage: Any, name: str, journal: Path | None) -> list[str]:
    """Two supervisors (threads, each its own study object) take the lock; the order of their
    entries and exits."""
    events: list[str] = []
    first_inside = threading.Event()

    def supervisor(label: str, hold_s: float) -> None:
        study = optuna.load_study(study_name=name, storage=storage)
        if label == "b":
            first_inside.wait(10)
        with ask_lock(study, journal):
            events.append(f"{label} in")
            first_inside.set()
            time.sleep(hold_s)
            events.append(f"{label} out")

    threads = [
        threading.Thread(target=supervisor, args=("a", 1.0)),
        threading.Thread(target=supervisor, args=("b", 0.0)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return events


def test_the_ask_lock_holds_on_postgresql_behind_optuna_s_cache(
    postgres_databases: list[str],
) -> None:
    storage_url = postgres_databases[0]
    storage = open_storage(storage_url, slots=1)
    optuna.create_study(study_name="locked", storage=storage)
    # A study's storage is Optuna's cache wrapper: the lock must reach the engine behind it.
    loaded = optuna.load_study(study_name="locked", storage=storage_url)
    assert optuna_internals.storage(loaded) is not optuna_internals.backend(loaded)
    assert optuna_internals.backend(loaded).engine.dialect.name == "postgresql"
    assert _held_one_at_a_time(storage_url, "locked", None) == ["a in", "a out", "b in", "b out"]


def test_the_ask_lock_holds_beside_a_journal_file(tmp_path: Path) -> None:
    journal = tmp_path / "journal.log"
    url = f"journal:///{journal}"
    optuna.create_study(study_name="locked", storage=open_storage(url, slots=1))
    storage = open_storage(url, slots=1)
    assert _held_one_at_a_time(storage, "locked", journal) == ["a in", "a out", "b in", "b out"]
