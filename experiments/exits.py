"""How the `harness` command ends: bad input one line on stderr and exit status 2, a failed
training exit status 1, Ctrl-C 130, never a traceback; our own warnings one line each."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import typer

from experiments import quiet
from experiments.errors import TrainingFailed, UsageError

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


def run_command(command: Any, argv: list[str] | None) -> int:
    """Run the click `command` on `argv` (default: `sys.argv`); its exit status."""
    warnings.formatwarning = _one_line_warnings  # type: ignore[assignment]
    try:
        return _run(command, argv)
    finally:
        warnings.formatwarning = _default_format


def _run(command: Any, argv: list[str] | None) -> int:
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
