"""The `harness` command: run experiments, open the MLflow UI, list runs.

Heavy libraries are imported inside the commands, so `harness --help` answers at once.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from experiments import quiet
from experiments.errors import UsageError

if TYPE_CHECKING:
    pass

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
    from experiments.run import commands

    loaded = load_config(config, overrides or [])
    if dry_run:
        commands.dry_run(loaded, tracking_uri, verbose=verbose, echo=typer.echo)
        return
    flags = (["--tracking-uri", tracking_uri] if tracking_uri else []) + (
        ["--verbose"] if verbose else []
    )
    command = shlex.join(["harness", "run", config, *(overrides or []), *flags])
    if resume is not None:
        commands.resume(resume, [], tracking_uri, verbose=verbose, config=loaded, echo=typer.echo)
        return
    from experiments.tracking_setup import check_reachable, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, loaded.tracking.uri)
    check_reachable(uri, doing="cannot start an MLflow run at")  # before TensorFlow loads
    _import_tensorflow_quietly(verbose=verbose)
    from experiments.run.run import run_experiment

    result = run_experiment(loaded, tracking_uri=tracking_uri, config_path=config, command=command)
    commands.report(result, echo=typer.echo)


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
    from experiments.run import commands

    commands.resume(run_id, overrides or [], tracking_uri, verbose=verbose, echo=typer.echo)


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
    launcher: Annotated[
        str | None,
        typer.Option(
            metavar="local|ray",
            help="Where trials run: this machine's --devices (local), or wherever a Ray "
            "cluster places them (ray) (search.launcher; default: local).",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="The Ray cluster, or auto (default: RAY_ADDRESS, else a local Ray instance).",
        ),
    ] = None,
    max_concurrent: Annotated[
        int | None,
        typer.Option("--max-concurrent", min=1, help="Trials running at once, at most."),
    ] = None,
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
        launcher=launcher,
        ray_address=ray_address,
        max_concurrent=max_concurrent,
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
    from experiments.ui import study_table
    from experiments.ui.hints import line

    if csv and json_:
        raise UsageError("harness runs: --csv and --json both given; pick one")
    uri = resolve_tracking_uri(tracking_uri, None)
    frame = (
        study_table.study_frame(uri, study)
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
        study_table.print_study(frame, wide=wide, echo=typer.echo)
        return
    table.print_runs(frame, wide=wide, echo=typer.echo)
    for run_id in table.orphaned(frame):  # killed: nobody could mark it, and it can go on
        typer.echo(f"run {run_id[:8]} stopped without ending; continue it with:")
        typer.echo(f"  {line('harness', 'resume', run_id[:8], '--tracking-uri', uri)}")


def _import_tensorflow_quietly(*, verbose: bool = False) -> None:
    quiet.import_tensorflow_quietly(verbose=verbose)


def main(argv: list[str] | None = None) -> int:
    """Entry point: bad input is one line on stderr and exit status 2, never a traceback."""
    from experiments.exits import run_command

    return run_command(typer.main.get_command(app), argv)


if __name__ == "__main__":
    sys.exit(main())


def entry_point() -> None:
    """Console-script wrapper: exit with `main`'s status."""
    sys.exit(main())
