"""The `harness` command: run experiments, open the MLflow UI, list runs.

Heavy libraries are imported inside the commands, so `harness --help` answers at once.
"""

from __future__ import annotations

import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from experiments import quiet
from experiments.errors import TrainingFailed, UsageError

if TYPE_CHECKING:
    from experiments.config.schema import ExperimentConfig
    from experiments.run.run import RunResult

# MLflow's HTTP client retries 7 times with back-off up to 2 minutes per request; our sinks
# retry on top of that, so a wrong --tracking-uri would take many minutes to report. A small
# budget per request keeps failures prompt; set these variables to override.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
# A config or a checkpoint downloaded from the run: not worth a progress bar in the terminal.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

app = typer.Typer(
    name="harness",
    help="Tracked Keras training runs from YAML configs (MLflow + TensorBoard).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

TrackingUri = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (default: tracking.uri, $MLFLOW_TRACKING_URI, "
        "sqlite:///mlflow.db).",
    ),
]


@app.command()
def run(
    config: Annotated[str, typer.Argument(help="Path of the experiment's YAML config.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted key=value overrides, e.g. trainer.epochs=1."),
    ] = None,
    tracking_uri: TrackingUri = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help="Show TensorFlow's own C++ log lines, and the traceback of an error your "
            "own code (model, data, callback) raised.",
        ),
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="RUN_ID",
            help="Continue this run from its latest checkpoint (CONFIG must be its config).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check everything a run would (config, data, model, loss, directories, "
            "tracking store) and stop before creating the run.",
        ),
    ] = False,
) -> None:
    """Train CONFIG and track the run in MLflow and TensorBoard."""
    from experiments.config.loader import load_config

    loaded = load_config(config, overrides or [])
    if dry_run:
        _dry_run(loaded, tracking_uri, verbose=verbose)
        return
    flags = (["--tracking-uri", tracking_uri] if tracking_uri else []) + (
        ["--verbose"] if verbose else []
    )
    command = shlex.join(["harness", "run", config, *(overrides or []), *flags])
    if resume is not None:
        _resume(resume, [], tracking_uri, verbose=verbose, config=loaded)
        return
    from experiments.tracking_setup import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, loaded.tracking.uri)
    check_reachable(uri, doing="cannot start an MLflow run at")  # before TensorFlow loads
    _import_tensorflow_quietly(verbose=verbose)
    from experiments.run.run import run_experiment

    result = run_experiment(loaded, tracking_uri=tracking_uri, config_path=config, command=command)
    _report(result)


@app.command()
def resume(
    run_id: Annotated[
        str, typer.Argument(help="The MLflow run id to continue (or a unique prefix of it).")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted key=value changes that are safe, e.g. trainer.epochs=20."),
    ] = None,
    tracking_uri: TrackingUri = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show TensorFlow's own C++ log lines.")
    ] = False,
) -> None:
    """Continue RUN_ID from its latest intact checkpoint, in the same MLflow run."""
    _resume(run_id, overrides or [], tracking_uri, verbose=verbose)


def _dry_run(config: ExperimentConfig, tracking_uri: str | None, *, verbose: bool) -> None:
    from experiments.tracking_setup import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, config.tracking.uri)
    check_reachable(uri, doing="cannot start an MLflow run at")
    _import_tensorflow_quietly(verbose=verbose)
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
    typer.echo(
        f"dry run: the config is valid and the run can start: model {config.model.name}"
        + (f" ({weights:,} trainable weights)" if weights is not None else "")
        + f", {plan.epochs} epochs of {plan.batches_per_epoch or '?'} batches, tracked at "
        f"{uri}. No run was created"
    )


def _resume(
    run_id: str,
    overrides: list[str],
    tracking_uri: str | None,
    *,
    verbose: bool,
    config: ExperimentConfig | None = None,
) -> None:
    from experiments.run.resume import find_resume_point
    from experiments.tracking_setup import resolve_tracking_uri
    from experiments.ui.run_ids import resolve_run_id

    uri = resolve_tracking_uri(tracking_uri, config.tracking.uri if config else None)
    run_id = resolve_run_id(uri, run_id)
    _import_tensorflow_quietly(verbose=verbose)  # reading the checkpoint imports it
    loaded, point = find_resume_point(run_id, uri, overrides, config)
    if point.finished:
        typer.echo(
            f"run {run_id} has trained {point.epoch} epochs (trainer.epochs="
            f"{loaded.trainer.epochs}): nothing left to train, nothing changed. To train it "
            f"longer: harness resume {run_id} trainer.epochs=N (N > {point.epoch})"
        )
        return
    from experiments.run.run import run_experiment

    if point.state is None:
        typer.echo(f"resuming run {run_id} from the beginning (it was stopped before training)")
    else:
        typer.echo(
            f"resuming run {run_id} at optimizer step {point.step} (epoch {point.epoch + 1}, "
            f"after batch {point.batch})"
        )
    command = shlex.join(["harness", "resume", run_id, *overrides])
    _report(run_experiment(loaded, tracking_uri=uri, command=command, resume=point))


def _report(result: RunResult) -> None:
    from experiments.ui.hints import line
    from experiments.ui.text_table import terminal_width
    from harness.callbacks.progress import fit_logs

    final = {k: v[-1] for k, v in result.history.items() if v}
    head = f"run {result.run_id[:8]} finished:"
    typer.echo(f"{head} {fit_logs(final, (terminal_width() or 200) - len(head) - 1)}")
    serving = "" if result.tracking_uri.startswith("http") else " (after harness ui)"
    uri = ["--tracking-uri", result.tracking_uri]
    typer.echo(f"  this run:    {result.run_url}{serving}")
    typer.echo(f"  all runs:    {result.runs_view_url}")
    typer.echo(f"  MLflow UI:   {line('harness', 'ui', *uri)}")
    typer.echo(
        f"  TensorBoard: {line('tensorboard', '--logdir', str(result.tensorboard_dir.parent))}"
    )
    typer.echo(f"  runs table:  {line('harness', 'runs', *uri)}")


@app.command()
def ui(
    tracking_uri: TrackingUri = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 5000,
    workers: Annotated[
        int | None,
        typer.Option(help="Server worker processes (default: 1 per 4 cores, 1 to 4).", min=1),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the runs view in a web browser.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", help="Show the server's own log (a line per request)."),
    ] = False,
) -> None:
    """Serve the MLflow UI on the same store `harness run` writes to; print the runs view."""
    from experiments.tracking_setup import resolve_tracking_uri
    from experiments.ui.server import serve_ui

    uri = resolve_tracking_uri(tracking_uri, None)
    serve_ui(uri, host=host, port=port, workers=workers, open_browser=open_browser, verbose=verbose)


@app.command()
def search(
    config: Annotated[str, typer.Argument(help="An experiment config with a search: section.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted key=value overrides, applied to every trial's config."),
    ] = None,
    devices: Annotated[
        str | None,
        typer.Option(
            help="Slots: 0,1,2,3 (a GPU per trial), 0,1:2,3 (two per trial), cpu:2 "
            "(default: every visible GPU, else one CPU slot)."
        ),
    ] = None,
    n_trials: Annotated[
        int | None, typer.Option("--n-trials", min=1, help="Trials to run (search.n_trials).")
    ] = None,
    study: Annotated[str | None, typer.Option(help="Study name (search.study).")] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage URL (default: journal file searches/<study>/journal.log)."
        ),
    ] = None,
    tracking_uri: TrackingUri = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Check the search and its base config (space, devices, storage, tracking, "
            "data, model) and stop before creating a study or a run.",
        ),
    ] = False,
) -> None:
    """Run an Optuna search over CONFIG's search: space, one trial process per slot."""
    from experiments.config.loader import load_config
    from experiments.search.start import run_search

    loaded = load_config(config, overrides or [])
    result = run_search(
        loaded,
        devices=devices,
        n_trials=n_trials,
        study_name=study,
        storage=storage,
        tracking_uri=tracking_uri,
        echo=typer.echo,
        dry_run=dry_run,
    )
    if result is None:  # a dry run: it said what it checked
        return
    from experiments.search.summary import summary_lines

    for line in summary_lines(result):
        typer.echo(line)


@app.command()
def worker(
    study: Annotated[str, typer.Option(help="The running study to join.")],
    storage: Annotated[
        str, typer.Option(help="Its Optuna storage, e.g. postgresql+psycopg://USER@HOST/DB.")
    ],
    devices: Annotated[
        str | None,
        typer.Option(help="This machine's slots, as for harness search (default: its GPUs)."),
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Join a running search from another machine: run its trials on this machine's slots."""
    from experiments.search.start import run_worker

    result = run_worker(
        study_name=study,
        storage=storage,
        devices=devices,
        tracking_uri=tracking_uri,
        echo=typer.echo,
    )
    typer.echo(f"worker for study '{result.study}' done: {result.counts_text}")


@app.command()
def compare(
    run_ids: Annotated[
        list[str], typer.Argument(metavar="RUN RUN [RUN ...]", help="Run ids or unique prefixes.")
    ],
    tracking_uri: TrackingUri = None,
) -> None:
    """The params that differ and the final metrics of runs side by side, the best marked."""
    from experiments.tracking_setup import resolve_tracking_uri
    from experiments.ui.compare import compare_runs

    compare_runs(resolve_tracking_uri(tracking_uri, None), run_ids, echo=typer.echo)


@app.command("config")
def show_config(
    config: Annotated[str, typer.Argument(help="Path of the experiment's YAML config.")],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Dotted key=value overrides, e.g. trainer.epochs=1."),
    ] = None,
) -> None:
    """Print CONFIG resolved: the overrides applied and every default filled in."""
    from experiments.config.loader import load_config
    from experiments.config.reference import resolved_yaml

    typer.echo(resolved_yaml(load_config(config, overrides or [])), nl=False)


@app.command()
def schema(
    output: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="Write it to FILE (default: print it)."),
    ] = None,
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="The config reference as Markdown (docs/config.md)."),
    ] = False,
) -> None:
    """The JSON Schema of experiment configs, each key with its description (for editors)."""
    from experiments.config.reference import reference_markdown, schema_json

    text = reference_markdown() if markdown else schema_json()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text)
    except OSError as error:
        raise UsageError(
            f"--output '{output}': cannot write the schema there ({error.strerror}). Pick a "
            "writable path"
        ) from None
    typer.echo(f"wrote the config schema to {output}")


@app.command()
def runs(
    experiment: Annotated[
        str | None, typer.Option(help="Only this experiment (default: all).")
    ] = None,
    tracking_uri: TrackingUri = None,
    limit: Annotated[int, typer.Option(help="Most recent N runs.", min=1)] = 20,
    study: Annotated[
        str | None, typer.Option(help="The trials of this search study, best first.")
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(
            metavar="KEY",
            help="Sort by this column (default: the main metric, best first).",
        ),
    ] = None,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column, even wider than the terminal.")
    ] = False,
    csv: Annotated[
        bool, typer.Option("--csv", help="Print every column as CSV (full ids and values).")
    ] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="Print every column as JSON (full ids and values).")
    ] = False,
) -> None:
    """A table of recent runs, best first: the quality metrics and the params that differ."""
    from experiments.tracking_setup import resolve_tracking_uri
    from experiments.ui import runs_table as table
    from experiments.ui.hints import line

    if csv and json_:
        raise UsageError("harness runs: --csv and --json both given; pick one")
    uri = resolve_tracking_uri(tracking_uri, None)
    frame = (
        table.study_frame(uri, study)
        if study is not None
        else table.runs_frame(uri, experiment, limit=limit)
    )
    if sort is not None and not frame.empty:
        frame = table.sort_by(frame, sort)
    if csv:
        typer.echo(frame.to_csv(index=False), nl=False)
        return
    if json_:
        typer.echo(table.to_json(frame))
        return
    if study is not None:
        table.print_study(frame, wide=wide, echo=typer.echo)
        return
    table.print_runs(frame, wide=wide, echo=typer.echo)
    for run_id in table.orphaned(frame):  # killed: nobody could mark it, and it can go on
        typer.echo(f"run {run_id[:8]} stopped without ending; continue it with:")
        typer.echo(f"  {line('harness', 'resume', run_id[:8], '--tracking-uri', uri)}")


def _import_tensorflow_quietly(*, verbose: bool = False) -> None:
    quiet.import_tensorflow_quietly(verbose=verbose)


_OURS = tuple(
    str(Path(__file__).resolve().parents[1] / package)
    for package in ("harness", "tracking", "experiments")
)  # the warnings these packages raise read as one line, like errors


def _one_line_warnings(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: Any = None
) -> str:
    if str(Path(filename).resolve()).startswith(_OURS):
        return f"harness: warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


_default_format = warnings.formatwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input is one line on stderr and exit status 2, never a traceback."""
    warnings.formatwarning = _one_line_warnings  # type: ignore[assignment]
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = _default_format


def _main(argv: list[str] | None) -> int:
    command = typer.main.get_command(app)
    verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)
    if verbose:
        quiet.be_verbose()
    try:
        status = command.main(args=argv, prog_name="harness", standalone_mode=False)
    except UsageError as error:
        if verbose and error.details:
            print(error.details, file=sys.stderr, end="")
        print(f"harness: error: {error}", file=sys.stderr)
        return UsageError.exit_code
    except TrainingFailed as error:  # the run is in the store, marked FAILED with the reason
        print(f"harness: training failed: {error}", file=sys.stderr)
        return TrainingFailed.exit_code
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        print("harness: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as error:  # typer's (vendored click) usage errors
        ctx = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            return 0
        where = ctx.command_path if ctx is not None else "harness"
        message = " ".join(error.format_message().split())
        print(f"{where}: error: {message} (see '{where} --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        status = 130
    if status == 130:  # typer turns KeyboardInterrupt (Ctrl-C, our SIGTERM) into exit 130
        print("harness: interrupted (a run in progress is marked KILLED)", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())


def entry_point() -> None:
    """Console-script wrapper: exit with `main`'s status."""
    sys.exit(main())
