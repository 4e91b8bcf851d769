"""Trials whose supervisor and process both ended without a word (a reboot, a killed process
group) are failed and retried by the next supervisor on their host, as are a dead driver's
Ray trials; live or other hosts' trials are left alone. A real journal-file study and a real
MLflow store."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from experiments.search.recovery import (
    ATTEMPT_ATTR,
    CLUSTER_TASK,
    PROCESS_ATTR,
    RESUME_ATTR,
    SUPERVISOR_ATTR,
    reap_dead_on_this_host,
)
from experiments.search.study import RETRY_ATTR, RUN_ATTR
from experiments.tracking_setup import tracking_store
from tracking.owner import owner


def _ended_process() -> str:
    """The owner record of a process that has ended on this host."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    recorded = owner(child.pid)
    child.wait()
    return recorded


def test_trials_of_a_dead_supervisor_and_process_are_failed_and_retried(
    tmp_path: Path, mlflow_uri: str
) -> None:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))
    )
    study = optuna.create_study(study_name="reap", storage=storage)
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("reap")
    dead, alive = _ended_process(), owner()
    elsewhere = f"{socket.gethostname()}-other:1:1.00"
    cases = {  # (supervisor, trial process): reaped?
        "both ended": (dead, dead, True),
        "ended before its process started": (dead, None, True),
        "a Ray task's, its driver gone": (dead, f"{CLUSTER_TASK}6f2a", True),
        "process still stopping": (dead, alive, False),
        "a Ray task's, its driver alive": (alive, f"{CLUSTER_TASK}6f2b", False),
        "supervisor alive": (alive, dead, False),
        "another host's": (elsewhere, elsewhere, False),
    }
    runs = {}
    for name, (supervisor, process, _) in cases.items():
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.set_user_attr(SUPERVISOR_ATTR, supervisor)
        if process is not None:
            trial.set_user_attr(PROCESS_ATTR, process)
        trial.set_user_attr(ATTEMPT_ATTR, 0)
        runs[name] = client.create_run(experiment, run_name=name).info.run_id
        trial.set_user_attr(RUN_ATTR, runs[name])

    reaped = reap_dead_on_this_host(study, tracking_store(mlflow_uri), retries=1)

    assert reaped == [0, 1, 2]
    trials = study.get_trials()
    for number, (name, (_, _, expected)) in enumerate(cases.items()):
        assert trials[number].state.name == ("FAIL" if expected else "RUNNING"), name
        run = client.get_run(runs[name])
        assert run.info.status == ("FAILED" if expected else "RUNNING"), name
    retries = trials[len(cases) :]
    assert [t.state.name for t in retries] == ["WAITING", "WAITING", "WAITING"]
    for retry, number in zip(retries, reaped, strict=True):
        assert retry.user_attrs[RETRY_ATTR] == number
        assert retry.user_attrs[ATTEMPT_ATTR] == 1
        assert retry.user_attrs[RESUME_ATTR] == trials[number].user_attrs[RUN_ATTR]
        assert retry.system_attrs["fixed_params"] == trials[number].params  # asked as they were

    # A second supervisor arriving finds nothing more to reap; retries spent: no new retry.
    assert reap_dead_on_this_host(study, tracking_store(mlflow_uri), retries=1) == []
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # a retry's turn
    assert trial.user_attrs[ATTEMPT_ATTR] == 1
    trial.set_user_attr(SUPERVISOR_ATTR, dead)
    waiting = len(study.get_trials(states=(optuna.trial.TrialState.WAITING,)))  # the others
    assert reap_dead_on_this_host(study, tracking_store(mlflow_uri), retries=1) == [trial.number]
    assert len(study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == waiting  # none
