"""The composition root of a tracked run: config → data, model, callbacks → engine → sinks.

Everything that bad input can break is checked by `prepare` before an MLflow run exists, so a
bad config never leaves a half-written run behind.
"""

from __future__ import annotations

import random
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from experiments.config.schema import ExperimentConfig, flatten
from experiments.config.urls import redact_all
from experiments.errors import TrainingFailed, UsageError, first_line
from experiments.run import record as run_record
from experiments.run.checkpoints import MIRROR, checkpoint_dir, checkpointing
from experiments.run.checkpoints import TAG as CHECKPOINT_TAG
from experiments.run.export import log_models
from experiments.run.prepare import Prepared, prepare
from experiments.run.resume import ResumePoint
from experiments.run.signals import signals_deferred
from experiments.tracking_setup import (
    TRACKING_BACKOFF_S,
    TRACKING_RETRIES,
    check_reachable,
    process_tags,
    resolve_tracking_uri,
    run_tags,
)
from experiments.ui.compare_view import main_metric, publish_compare_view
from experiments.ui.links import VIEW_KEY, run_url, runs_view_url, ui_address
from harness.checkpoints import CheckpointsFailing
from harness.checkpoints.plain import NotPlainData
from harness.stopping import NonFiniteGradients, StopSignal, stop_on_signals


@dataclass(frozen=True)
class RunResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    tensorboard_dir: Path
    history: dict[str, list[float]]
    run_url: str  # the run's page in the MLflow UI
    runs_view_url: str  # the experiment's runs table, "Model training" mode


def run_experiment(
    config: ExperimentConfig,
    *,
    tracking_uri: str | None = None,
    config_path: str | None = None,
    command: str | None = None,
    resume: ResumePoint | None = None,
    tags: Mapping[str, str] | None = None,
    extra_callbacks: Sequence[Any] = (),
    started: Callable[[str], None] | None = None,
) -> RunResult:
    """Train one experiment and track it in MLflow and TensorBoard.

    With `resume` (from `experiments.run.resume.find_resume_point`), the run continues from its
    checkpoint in the same MLflow run and TensorBoard directory. `tags` are added to the run;
    `extra_callbacks` run after all others (after the metrics are logged at an epoch's end);
    `started` is called with the run id once the MLflow run exists.

    Example:
        >>> result = run_experiment(load_config("experiments/configs/digits_mlp.yaml"))
    """
    uri = resolve_tracking_uri(tracking_uri, config.tracking.uri)
    check_reachable(uri, doing="cannot start an MLflow run at")  # before any data is loaded
    prepared = prepare(config, resuming=resume is not None)  # seeds Python's `random`, …
    from tracking import FanOutSink, MlflowSink, TensorBoardSink
    from tracking.mlflow import MlflowOptions
    from tracking.mlflow.delivery.journal import JOURNAL_NAME
    from tracking.mlflow.delivery.replay import deliver_left_behind
    from tracking.mlflow.store import BrokenStore, sqlite_path

    extra_tags = dict(tags or {})
    tags = run_tags(engine=config.trainer.engine, config_path=config_path)
    tags["mlflow.note.content"] = run_record.description(config, command=command)
    tags.update(extra_tags)
    for line in deliver_left_behind():  # what killed runs on this machine could not send
        print(line, file=sys.stderr)
    # The run's metric points wait on disk beside its checkpoints until MLflow has them.
    journal = (
        resume.directory if resume is not None else checkpoint_dir(config, "{run_id}")
    ) / JOURNAL_NAME
    options = MlflowOptions(
        max_retries=TRACKING_RETRIES,
        retry_backoff_s=TRACKING_BACKOFF_S,
        journal_path=str(journal),
        expected_metric_points=prepared.plan.expected_metric_points,
    )  # a writer process at once when the run will log a lot
    try:
        # MLflow draws random run names from Python's `random`: with the seeded state every
        # run of a config would get the same name, and creating the run would shift the seeded
        # sequence training sees. Draw it from fresh entropy and put the seeded state back.
        seeded = random.getstate()
        random.seed()
        try:
            if resume is not None:
                mlflow_sink = MlflowSink.resume(uri, resume.run_id, options=options)
            else:
                mlflow_sink = MlflowSink.start(
                    uri,
                    experiment=config.tracking.experiment,
                    run_name=config.tracking.run_name,
                    tags=tags,
                    options=options,
                )
        finally:
            random.setstate(seeded)
    except BrokenStore as broken:
        raise UsageError(str(broken)) from None
    except Exception as error:  # unreachable server, unwritable store, deleted experiment
        where = "its folder is writable" if sqlite_path(uri) else "the server is reachable"
        raise UsageError(
            f"cannot start an MLflow run at '{uri}': {first_line(error)}. Check that {where}, "
            "or pick another store with --tracking-uri, tracking.uri or MLFLOW_TRACKING_URI"
        ) from None
    tb_dir = Path(config.tracking.tensorboard_dir) / config.tracking.experiment / mlflow_sink.run_id
    sink: Any = mlflow_sink
    try:
        # Ctrl-C and SIGTERM set a flag the loop checks between compiled calls; the loop then
        # stops at a step boundary and raises TrainingInterrupted (a KeyboardInterrupt).
        with stop_on_signals(StopSignal()) as stop:
            if config.tracking.system_metrics_every_s > 0:
                mlflow_sink.monitor_system(
                    config.tracking.system_metrics_every_s,
                    scope=config.tracking.system_metrics_scope,
                )
            sink = FanOutSink([mlflow_sink, TensorBoardSink(tb_dir)])
            directory = None if resume is None else resume.directory
            policy = checkpointing(
                config,
                mlflow_sink.run_id,
                directory,
                before_write=mlflow_sink.sync,  # a checkpoint never ahead of the journal
                upload=lambda path: mlflow_sink.log_artifact(path, artifact_path=MIRROR),
            )
            sink.set_tags(
                {
                    "harness.tensorboard_dir": str(tb_dir.resolve()),
                    **(
                        {}
                        if resume is None
                        else {**_resume_tags(resume), **process_tags(), **extra_tags}
                    ),
                }
            )
            if started is not None:
                started(mlflow_sink.run_id)
            history = _train_and_log(prepared, sink, stop, policy, resume, extra_callbacks)
            sort = main_metric(history, config.checkpoint.monitor, config.checkpoint.mode)
            view_saved = publish_compare_view(uri, mlflow_sink.experiment_id, history, sort=sort)
    except (CheckpointsFailing, NonFiniteGradients, NotPlainData, TrainingFailed) as failed:
        with signals_deferred():
            sink.close("FAILED", error=str(failed))
        raise TrainingFailed(str(failed)) from None
    except KeyboardInterrupt as interrupted:
        reason = getattr(interrupted, "reason", "") or "Ctrl-C or SIGTERM"
        with signals_deferred():
            sink.set_tags(getattr(interrupted, "tags", {}))  # e.g. a pruned trial's state
            # A pruned trial ends FINISHED (its epochs are a result, not a failure).
            status = getattr(interrupted, "status", "KILLED")
            sink.close(status, error=None if status == "FINISHED" else f"interrupted ({reason})")
        raise
    except BaseException:
        with signals_deferred():
            sink.close("FAILED", error=traceback.format_exc())
        raise
    with signals_deferred():
        # Params cannot change on resume: the epochs trained in all (a resumed run's history
        # holds its earlier epochs too), where the UI shows it.
        done = max((len(values) for values in history.values()), default=0)
        sink.set_tags({"harness.epochs_trained": str(done)})
        sink.close("FINISHED")
    address, experiment_id = ui_address(uri), mlflow_sink.experiment_id
    return RunResult(
        mlflow_sink.run_id,
        experiment_id,
        uri,
        tb_dir,
        history,
        run_url=run_url(address, experiment_id, mlflow_sink.run_id),
        runs_view_url=runs_view_url(
            address, experiment_id, view_key=VIEW_KEY if view_saved else None
        ),
    )


def _resume_tags(resume: ResumePoint) -> dict[str, str]:
    changes = "; ".join(f"{k}: {old} -> {new}" for k, (old, new) in resume.changed.items())
    where = f"step {resume.step} (epoch {resume.epoch + 1}, after batch {resume.batch})"
    if resume.state is None:
        where = "the beginning (stopped before training)"
    return {
        "harness.resumed_from": where,
        **({"harness.resume_changes": changes} if changes else {}),
    }


def _train_and_log(
    prepared: Prepared,
    sink: Any,
    stop: Any,
    checkpoints: Any,
    resume: ResumePoint | None,
    extra_callbacks: Sequence[Any] = (),
) -> dict[str, list[float]]:
    from harness import train
    from harness.callbacks import MetricsLogger, ProgressLogger
    from harness.logs import scalar_logs

    config = prepared.config
    # First, so a run killed at any moment after this has what `harness resume` needs.
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(
            yaml.safe_dump(redact_all(config.model_dump(mode="json")), sort_keys=False)
        )
        sink.log_artifact(config_file)
    # Tagged once the config is logged: a run with this tag has what a resume needs.
    sink.set_tags({CHECKPOINT_TAG: str(checkpoints.store.directory.resolve())})
    sink.log_params(flatten(config))
    sink.log_params({f"model.{k}": str(v) for k, v in prepared.parameter_counts.items()})
    if resume is None or resume.state is None:  # a resumed run logged them when it started
        for dataset in run_record.dataset_records(config, prepared.data):
            sink.log_dataset(dataset)
    trainer = config.trainer
    logger = MetricsLogger(sink, log_every_n_steps=trainer.log_every_n_steps)
    extra: list[Any] = []
    if prepared.ema is not None:
        from harness.callbacks.ema_snapshots import EmaSnapshots

        every = config.ema.snapshot_every_n_epochs if config.ema else None
        extra.append(EmaSnapshots(prepared.ema, sink, every_n_epochs=every))
    history = train(
        prepared.model,
        prepared.data,
        engine=trainer.engine,
        epochs=trainer.epochs,
        steps_per_epoch=trainer.steps_per_epoch,
        validation_steps=trainer.validation_steps,
        stop=stop,
        ema=prepared.ema,
        gradients=prepared.gradients,
        checkpointing=checkpoints,
        resume_from=None if resume is None else resume.state,
        # The logger goes last, so it sees what the user's callbacks changed at epoch end
        # (ReduceLROnPlateau's new rate); the progress display goes first.
        callbacks=[
            ProgressLogger(trainer.progress),
            *prepared.callbacks,
            *extra,
            logger,
            *extra_callbacks,
        ],
    )
    values = _history_values(history.history, scalar_logs)
    _log_history(sink, values)
    # The last epoch's metrics (logged at this step) are linked to the last model.
    final = {key: column[-1] for key, column in values.items() if column}
    log_models(prepared, sink, final, checkpoints.store)
    halted = prepared.gradients.halt_reason if prepared.gradients is not None else None
    if halted is not None:  # trainer.on_nan: stop ended training; what it made is logged
        raise TrainingFailed(halted)
    return values


def _history_values(history: dict[str, list[Any]], scalar_logs: Any) -> dict[str, list[float]]:
    """History as columns of numbers, vector metrics one column per component."""
    rows = [scalar_logs({k: vs[i] for k, vs in history.items()}) for i in range(_epochs(history))]
    return {key: [row[key] for row in rows] for key in (rows[0] if rows else {})}


def _epochs(history: dict[str, list[Any]]) -> int:
    return min((len(values) for values in history.values()), default=0)


def _log_history(sink: Any, history: dict[str, list[float]]) -> None:
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.csv"
        frame = pd.DataFrame(history)
        frame.insert(0, "epoch", range(1, len(frame) + 1))  # counted from 1, as in MLflow
        frame.to_csv(path, index=False)
        sink.log_artifact(path)
