"""One Optuna trial in its own process, started by the search supervisor:

    python -m experiments.search.trial TRIAL.json   (a `TrialSpec`)

The supervisor sets `CUDA_VISIBLE_DEVICES` (and memory growth) before this process imports
TensorFlow. The trial trains its config as a tracked child run of the study's parent run,
reports its metric to Optuna at every epoch's end (both engines: one Keras callback), and tells
Optuna how it ended. A retried trial resumes the run of the trial it retries from its last
checkpoint. Exit status: 0 (complete or pruned), 2 (bad input: the message on stderr's last
line), other (a failure the supervisor records).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from experiments.errors import TrainingFailed, UsageError
from experiments.quiet import import_tensorflow_quietly
from experiments.search.launch import DEVICE_ENV, NODE_ENV
from experiments.search.study import ERROR_ATTR, RUN_ATTR, STATE_TAG, VALUE_TAG
from harness.stopping import TrainingInterrupted

import_tensorflow_quietly()  # the trial's log without TensorFlow's C++ start-up lines
import keras  # noqa: E402


class TrialPruned(TrainingInterrupted):
    """Optuna pruned the trial: not a failure, so the run ends FINISHED, with the tag
    harness.trial_state=PRUNED and "(pruned)" after its name (the UI tells it from a crash)."""

    status = "FINISHED"

    def __init__(self, reason: str, *, run_name: str | None = None) -> None:
        super().__init__(reason)
        self.tags = {STATE_TAG: "PRUNED"}
        if run_name:
            self.tags["mlflow.runName"] = f"{run_name} (pruned)"


class MetricNotLogged(UsageError):
    """`search.metric` is not among the epoch's logs."""


class ReportToOptuna(keras.callbacks.Callback):
    """At each epoch's end: report `metric` to the trial, and stop the run if Optuna prunes."""

    stateless = True  # the reports live in the study's storage

    def __init__(
        self, trial: Any, metrics: list[str], *, prune: bool, run_name: str | None = None
    ) -> None:
        super().__init__()
        self.trial, self.metrics, self.prune = trial, metrics, prune
        self.run_name = run_name

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        missing = [metric for metric in self.metrics if metric not in logs]
        if missing:
            raise MetricNotLogged(
                f"search.metric '{missing[0]}' is not logged by the run; at the end of epoch "
                f"{epoch + 1} it logged: {', '.join(sorted(logs))}. Set search.metric to one "
                "of those"
            )
        if not self.prune:  # multi-objective studies cannot prune
            return
        self.trial.report(float(logs[self.metrics[0]]), step=epoch + 1)
        if self.trial.should_prune():
            raise TrialPruned(f"pruned by Optuna after epoch {epoch + 1}", run_name=self.run_name)


def best_value(history: dict[str, list[float]], metric: str, direction: str) -> float:
    """The trial's value: its best epoch's `metric` (as Keras Tuner scores a trial)."""
    values = history[metric]
    return min(values) if direction == "minimize" else max(values)


def stop_when_orphaned() -> threading.Event:
    """SIGTERM this trial (it stops at a step boundary, checkpointed) once its supervisor is
    gone, and set the event: a trial runs in its own session, and nobody beats for an orphan,
    so another worker would fail and retry it while it still trained."""
    import signal
    import time

    supervisor = os.getppid()
    orphaned = threading.Event()

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        orphaned.set()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()
    return orphaned


def main(argv: list[str]) -> int:
    import optuna

    from experiments.config.schema import ExperimentConfig
    from experiments.run.run import run_experiment
    from experiments.search import optuna_internals
    from experiments.search.launch import TrialSpec
    from experiments.search.study import load_for_trial, open_storage
    from experiments.tracking_setup import tracking_store

    orphaned = stop_when_orphaned()
    spec = TrialSpec.read(Path(argv[0]))
    study = load_for_trial(open_storage(spec.storage, slots=1), spec.study)
    trial = optuna_internals.trial_for(study, spec.trial_id)
    number = trial.number
    config = ExperimentConfig.model_validate(spec.config)
    tags = {
        "mlflow.parentRunId": spec.parent_run_id,
        "harness.study": spec.study,
        "harness.trial_number": str(number),
        "harness.search_metric": ",".join(spec.metrics),  # what ranks it among the trials
        "harness.search_direction": ",".join(spec.directions),
        "harness.device": os.environ.get(DEVICE_ENV, ""),  # the slot: gpu0, cpu1, ...
        "harness.node": os.environ.get(NODE_ENV) or socket.gethostname(),
        "harness.cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "harness.trial_log": spec.log,
        "harness.trial_params": json.dumps(spec.params),
        STATE_TAG: "RUNNING",
    }
    report = ReportToOptuna(
        trial, spec.metrics, prune=len(spec.metrics) == 1, run_name=config.tracking.run_name
    )
    resume = None
    if spec.resume_run:  # a retry: continue the dead trial's run from its checkpoint
        from experiments.run.resume import find_resume_point

        try:
            config, resume = find_resume_point(spec.resume_run, spec.tracking_uri, [], config)
        except UsageError as error:
            print(f"no checkpoint to resume ({error}); training afresh", file=sys.stderr)
        if resume is not None and resume.finished:  # ended before Optuna was told
            print("its run had finished; training afresh", file=sys.stderr)
            resume = None

    def started(run_id: str) -> None:
        trial.set_user_attr(RUN_ATTR, run_id)

    try:
        result = run_experiment(
            config,
            tracking_uri=spec.tracking_uri,
            command=f"harness search (trial {number})",
            resume=resume,
            tags=tags,
            extra_callbacks=[report],
            started=started,
        )
    except TrialPruned:
        study.tell(number, state=optuna.trial.TrialState.PRUNED)
        return 0
    except KeyboardInterrupt:
        if orphaned.is_set():  # nobody else will end the trial: it continues next time
            from experiments.search.recovery import hand_back

            hand_back(study, spec.trial_id, tracking_store(spec.tracking_uri))
            print("stopped: the search supervisor ended; continued by the next search")
        raise
    except (MetricNotLogged, UsageError, TrainingFailed) as error:
        trial.set_user_attr(ERROR_ATTR, str(error))
        study.tell(number, state=optuna.trial.TrialState.FAIL)
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, UsageError) else 1
    values = [
        best_value(result.history, metric, direction)
        for metric, direction in zip(spec.metrics, spec.directions, strict=True)
    ]
    study.tell(number, values if len(values) > 1 else values[0])
    tracking_store(spec.tracking_uri).set_tags(
        result.run_id,
        {VALUE_TAG: ",".join(f"{v:.8g}" for v in values), STATE_TAG: "COMPLETE"},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
