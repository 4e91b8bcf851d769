"""Bad input is reported as one line and exit status 2, never a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """Invalid config, CLI argument, storage URL or data: the message is the whole story.

    The message names what is wrong, the rule, the value received and how to fix it.
    `details`: where the user's own code raised (its traceback), shown with `--verbose`.
    """

    exit_code = 2

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


def user_code_error(what: str, error: BaseException, *, fix: str) -> UsageError:
    """An error a user's model, data, callback, loss or metric code raised, as one line: what
    raised it, the error's type and first line, the fix; its traceback in `details`."""
    import traceback

    return UsageError(
        f"{what} raised {type(error).__name__}: {first_line(error)}. {fix} (--verbose shows "
        "the traceback)",
        details="".join(traceback.format_exception(error)),
    )


class TrainingFailed(Exception):
    """Training ended in failure the run records (diverged, halted by `trainer.on_nan`)."""

    exit_code = 1


def first_line(error: BaseException, *, limit: int = 200) -> str:
    """The first line of an error's message (its repr when it has none), cut to `limit`."""
    text = str(error).strip() or repr(error)
    line = text.splitlines()[0]
    return line if len(line) <= limit else line[:limit] + "…"
