"""Trials whose process or supervisor is gone: nothing is left RUNNING, nothing is lost.

- A trial process that dies under a live supervisor: the supervisor fails it at once.
- A supervisor that dies (SIGKILL, a closed terminal) while its trials train: each orphaned
  trial stops at a step boundary, checkpointed, fails its own Optuna trial and enqueues its
  continuation, which the next `harness search` (or any worker) picks up (`hand_back`).
- Both gone at once on one host (the machine rebooted, the process group was killed): the next
  supervisor on that host finds their RUNNING trials by the owners recorded in each trial's
  attributes, fails them and retries them from their checkpoints (`reap_dead_on_this_host`);
  so too the trials of a dead supervisor on a Ray cluster, which Ray stopped with it.
  Other hosts' trials are PostgreSQL's heartbeats' business.
"""

from __future__ import annotations

from typing import Any

from experiments.search import optuna_internals
from experiments.search.study import RETRY_ATTR, RUN_ATTR, STATE_TAG
from tracking.owner import gone

NAME_ATTR = "harness.run_name"  # a trial's user attribute: its MLflow run's name
ATTEMPT_ATTR = "harness.attempt"  # retries of the original trial so far
RESUME_ATTR = "harness.resume_run"  # the run a retry continues
SUPERVISOR_ATTR = "harness.supervisor"  # host:pid:start of the supervisor that asked for it
PROCESS_ATTR = "harness.trial_process"  # host:pid:start of the process that trains it
CLUSTER_TASK = "ray task "  # the start of PROCESS_ATTR for a trial a Ray task watches
HANDED_BACK_ATTR = "harness.handed_back"  # set by an orphan that queued its own continuation


def enqueue_continuation(study: Any, frozen: Any, *, attempt: int) -> None:
    """The trial's parameters again, as a new trial continuing its run from its checkpoint."""
    study.enqueue_trial(
        frozen.params,
        user_attrs={
            RETRY_ATTR: frozen.number,
            ATTEMPT_ATTR: attempt,
            RESUME_ATTR: frozen.user_attrs.get(RUN_ATTR),
            NAME_ATTR: frozen.user_attrs.get(NAME_ATTR),
        },
        skip_if_exists=False,
    )


def retry(study: Any, frozen: Any, retries: int) -> bool:
    """Retry a failed trial from its checkpoint if its attempts are within `search.retries`;
    whether it was retried."""
    attempt = int(frozen.user_attrs.get(ATTEMPT_ATTR, 0))
    if attempt >= retries:
        return False
    enqueue_continuation(study, frozen, attempt=attempt + 1)
    return True


def fail_trial(study: Any, number: int) -> bool:
    """FAIL the trial; False when it had already ended (another process got there first)."""
    import optuna

    try:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    except (ValueError, RuntimeError):  # finished already (UpdateFinishedTrialError), or grid
        return False
    return True


def mark_run_failed(runs: Any, run_id: str, why: str) -> None:
    """Tag the trial's run as failed (`runs`: an `MlflowRuns`), and end it FAILED if its
    process could not."""
    runs.fail(run_id, f"the trial process {why}", tags={STATE_TAG: "FAIL", "harness.exit": why})


def hand_back(study: Any, trial_id: int, runs: Any) -> bool:
    """An orphaned trial that stopped, checkpointed: FAIL it and enqueue its continuation (the
    same attempt: it did not fail, its supervisor went). False if it had ended already."""
    frozen = optuna_internals.frozen_trial(study, trial_id)
    run_id = frozen.user_attrs.get(RUN_ATTR)
    if run_id is not None:
        mark_run_failed(runs, run_id, "stopped: its supervisor ended")
    # Before it ends: a supervisor that outlived this process's parent (a Ray task's worker)
    # reads it, and leaves the retry to the continuation queued here.
    optuna_internals.trial_for(study, trial_id).set_user_attr(HANDED_BACK_ATTR, True)
    if not fail_trial(study, frozen.number):
        return False
    enqueue_continuation(study, frozen, attempt=int(frozen.user_attrs.get(ATTEMPT_ATTR, 0)))
    return True


def reap_dead_on_this_host(study: Any, runs: Any, retries: int) -> list[int]:
    """FAIL the RUNNING trials whose supervisor and process both ended on this host without a
    word, and retry them (`search.retries`) from their checkpoints; their numbers."""
    import optuna

    reaped = []
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for frozen in running:
        attrs = frozen.user_attrs
        process = attrs.get(PROCESS_ATTR)  # none: its supervisor died before starting it
        # A cluster's trial (`ray task ...`) went with its supervisor: Ray stops a driver's
        # tasks when it dies, and their trial processes stop as orphans.
        ended = process is None or gone(process) or process.startswith(CLUSTER_TASK)
        if not (gone(attrs.get(SUPERVISOR_ATTR)) and ended):
            continue
        run_id = attrs.get(RUN_ATTR)
        if run_id is not None:
            mark_run_failed(runs, run_id, "ended with its supervisor, without a word")
        if not fail_trial(study, frozen.number):
            continue
        retry(study, frozen, retries)
        reaped.append(frozen.number)
    return reaped
