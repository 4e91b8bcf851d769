"""A quiet terminal: TensorFlow's C++ start-up lines and MLflow's INFO chatter hidden unless
the user asks (`--verbose`, or a `TF_CPP_MIN_LOG_LEVEL` / `MLFLOW_LOGGING_LEVEL` of their own).

Imported first by every entry point that may import TensorFlow (the CLI, a search's trial
process), so the defaults are in place before TensorFlow or MLflow is imported. A child process
inherits the defaults, and `DEFAULTED` tells it they were ours, not the user's.
"""

from __future__ import annotations

import os
import sys

DEFAULTED = "HARNESS_QUIET_DEFAULTS"  # set when the levels below are ours, not the user's

_ours = os.environ.get(DEFAULTED) == "1"
USER_TF_LOG_LEVEL = None if _ours else os.environ.get("TF_CPP_MIN_LOG_LEVEL")
USER_MLFLOW_LOG_LEVEL = None if _ours else os.environ.get("MLFLOW_LOGGING_LEVEL")
if USER_TF_LOG_LEVEL is None and USER_MLFLOW_LOG_LEVEL is None:
    os.environ[DEFAULTED] = "1"
# TensorFlow's C++ log lines (start-up chatter, and `E0000 ... NodeDef mentions attribute`
# when a tf.data graph is rewritten) would bury our one-line messages. Errors still reach the
# user as Python exceptions with TensorFlow's message.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# "Creating initial MLflow database tables...", alembic's migration lines: not news to a user.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def be_verbose() -> None:
    """Let TensorFlow's and MLflow's own log lines through (before either is imported)."""
    if USER_TF_LOG_LEVEL is None:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    if USER_MLFLOW_LOG_LEVEL is None:
        os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO"
    os.environ.pop(DEFAULTED, None)


def import_tensorflow_quietly(*, verbose: bool = False) -> None:
    """Import TensorFlow and let it find its devices with file descriptor 2 silenced.

    TF 2.21 writes absl start-up lines ("All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on", "Could not find cuda drivers") to fd 2 on import, and
    `E0000 ... cuInit` when it first looks for GPUs, before any log level applies. Only those
    two moments are silenced; a failing import still raises normally. `verbose`, or a
    `TF_CPP_MIN_LOG_LEVEL` the user set, keeps them.
    """
    if "tensorflow" in sys.modules:
        return
    if verbose or USER_TF_LOG_LEVEL is not None:
        if verbose:
            be_verbose()
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()  # the GPU platform's start-up lines, now
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
