"""One `harness search` as the benchmarks run it: in its own folder, with its own journal file
and MLflow store, timed end to end."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def timed_search(
    folder: Path,
    config: dict[str, Any],
    *,
    slots: int,
    trials: int,
    where: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[float, Any, str]:
    """Run the search of `config` (its study named after `tracking.experiment`) on `cpu:slots`
    (or where `where` says: `--launcher ray ...`); its wall time in seconds, the finished
    Optuna study and the MLflow tracking URI."""
    import optuna

    folder.mkdir()
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "experiments.cli", "search", str(path)]
        + (where or ["--devices", f"cpu:{slots}"])
        + ["--n-trials", str(trials), "--tracking-uri", uri],
        cwd=folder,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    name = config["tracking"]["experiment"]
    journal = folder / "searches" / name / "journal.log"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    return wall, optuna.load_study(study_name=name, storage=storage), uri
