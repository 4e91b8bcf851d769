"""The bodies of `harness run --dry-run`, `harness resume` and the lines a finished run
prints; the CLI only parses arguments and hands them here."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from experiments.quiet import import_tensorflow_quietly

if TYPE_CHECKING:
    from experiments.config.schema import ExperimentConfig
    from experiments.run.run import RunResult

Echo = Callable[[str], None]


def dry_run(
    config: ExperimentConfig, tracking_uri: str | None, *, verbose: bool, echo: Echo = print
) -> None:
    """Check everything a run of `config` would, and say so; create nothing."""
    from experiments.tracking_setup import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, config.tracking.uri)
    check_reachable(uri, doing="cannot start an MLflow run at")
    import_tensorflow_quietly(verbose=verbose)
    from experiments.run.checkpoints import check_writable
    from experiments.run.prepare import prepare
    from experiments.tracking_setup import tracking_store
    from tracking.mlflow.store import sqlite_path

    database = sqlite_path(uri)
    if database is not None and not database.is_file():  # created by the first run
        check_writable(database.parent, key="--tracking-uri", example="sqlite:///mlflow.db")
    else:
        tracking_store(uri, create=False)  # opens it: a half-migrated store is reported
    prepared = prepare(config)
    plan = prepared.plan
    weights = prepared.parameter_counts.get("trainable_params")
    echo(
        f"dry run: the config is valid and the run can start: model {config.model.name}"
        + (f" ({weights:,} trainable weights)" if weights is not None else "")
        + f", {plan.epochs} epochs of {plan.batches_per_epoch or '?'} batches, tracked at "
        f"{uri}. No run was created"
    )


def resume(
    run_id: str,
    overrides: list[str],
    tracking_uri: str | None,
    *,
    verbose: bool,
    config: ExperimentConfig | None = None,
    echo: Echo = print,
) -> None:
    """Continue the run `run_id` (any unique prefix) from its latest checkpoint."""
    from experiments.run.resume import find_resume_point
    from experiments.tracking_setup import resolve_tracking_uri
    from experiments.ui.run_ids import resolve_run_id

    uri = resolve_tracking_uri(tracking_uri, config.tracking.uri if config else None)
    run_id = resolve_run_id(uri, run_id)
    import_tensorflow_quietly(verbose=verbose)  # reading the checkpoint imports it
    loaded, point = find_resume_point(run_id, uri, overrides, config)
    short = run_id[:8]
    if point.finished:
        from experiments.ui.hints import line

        epochs = f"{point.epoch} epoch{'s' if point.epoch != 1 else ''}"
        flags = ["--tracking-uri", tracking_uri] if tracking_uri else []
        echo(
            f"run {short} has trained {epochs} of trainer.epochs={loaded.trainer.epochs}: "
            "nothing left to train, nothing changed"
        )
        hint = line("harness", "resume", short, "trainer.epochs=N", *flags)
        echo(f"  to train it longer: {hint}  (N > {point.epoch})")
        return
    from experiments.run.run import run_experiment

    if point.state is None:
        echo(f"resuming run {short} from the beginning (it was stopped before training)")
    else:
        echo(
            f"resuming run {short} at optimizer step {point.step} (epoch {point.epoch + 1}, "
            f"after batch {point.batch})"
        )
    command = shlex.join(["harness", "resume", run_id, *overrides])
    report(run_experiment(loaded, tracking_uri=uri, command=command, resume=point), echo=echo)


def report(result: RunResult, *, echo: Echo = print) -> None:
    """The lines a finished run prints: its final values and where to look."""
    from experiments.ui.hints import line
    from experiments.ui.text_table import terminal_width
    from harness.callbacks.progress import fit_logs

    final = {k: v[-1] for k, v in result.history.items() if v}
    head = f"run {result.run_id[:8]} finished:"
    echo(f"{head} {fit_logs(final, (terminal_width() or 200) - len(head) - 1)}")
    serving = "" if result.tracking_uri.startswith("http") else " (after harness ui)"
    uri = ["--tracking-uri", result.tracking_uri]
    echo(f"  this run:    {result.run_url}{serving}")
    echo(f"  all runs:    {result.runs_view_url}")
    echo(f"  MLflow UI:   {line('harness', 'ui', *uri)}")
    echo(f"  TensorBoard: {line('tensorboard', '--logdir', str(result.tensorboard_dir.parent))}")
    echo(f"  runs table:  {line('harness', 'runs', *uri)}")
