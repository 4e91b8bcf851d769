"""A run's checkpoint directory and policy, from `checkpoint:`; checked before the run exists."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.config.schema import ExperimentConfig
from experiments.errors import UsageError

TAG = "harness.checkpoint_dir"  # the MLflow tag `harness resume` finds the checkpoints by
MIRROR = "checkpoint/latest"  # the artifact path of the mirrored latest checkpoint
# Set by a launcher whose machines do not share the working directory (a Ray node): a relative
# `checkpoint.dir` is written under it, on that machine's own disk (and mirrored to MLflow).
# The config is unchanged by it, so a retry on another machine resumes with the same config.
ROOT_ENV = "HARNESS_CHECKPOINT_ROOT"


def _template(config: ExperimentConfig) -> str:
    root = os.environ.get(ROOT_ENV)
    template = config.checkpoint.dir
    return str(Path(root) / template) if root and not Path(template).is_absolute() else template


def checkpoint_dir(config: ExperimentConfig, run_id: str) -> Path:
    """`checkpoint.dir` with `{experiment}` and `{run_id}` filled in (under the launcher's
    root, when it set one)."""
    return Path(_template(config).format(experiment=config.tracking.experiment, run_id=run_id))


def check_checkpoint_dir(config: ExperimentConfig) -> None:
    """Before a new run: the directory can be made, and holds no other run's checkpoints."""
    template = _template(config)
    fixed = template.split("{run_id}")[0].format(experiment=config.tracking.experiment)
    # The part before {run_id}; without it, the directory itself.
    check_writable(Path(fixed), key="checkpoint.dir", example="checkpoints/{experiment}/{run_id}")
    if "{run_id}" not in template:
        directory = Path(fixed)
        if directory.is_dir() and any(directory.glob("ckpt-*")):
            raise UsageError(
                f"checkpoint.dir '{directory}' already holds another run's checkpoints, which "
                "this run's retention would delete: keep {run_id} in it (the default is "
                "checkpoints/{experiment}/{run_id}), or resume that run with harness resume"
            )


def open_store(config: ExperimentConfig, directory: Path) -> Any:
    """The `CheckpointStore` in `directory`, with `checkpoint:`'s retention rules."""
    from harness.checkpoints import CheckpointStore

    section = config.checkpoint
    return CheckpointStore(
        directory,
        keep_last=section.keep_last,
        # The best checkpoint is where the best model is exported from: always kept.
        keep_best=max(section.keep_best, 1 if section.monitor else 0),
        monitor=section.monitor,
        mode=section.mode,
        keep_every_n_epochs=section.keep_every_n_epochs,
    )


def check_writable(directory: Path, *, key: str, example: str) -> None:
    """That `directory` can be written, or created, without creating it (the run's folders
    appear only once the run exists): a one-line UsageError naming `key` otherwise."""
    path = directory.absolute()
    existing = next(p for p in [path, *path.parents] if p.exists())
    problem = None
    if not existing.is_dir():
        problem = f"'{existing}' is a file" if existing != path else "it is a file"
    else:
        try:  # the one test of writability that holds for root and special filesystems too
            os.rmdir(tempfile.mkdtemp(prefix=".harness-check-", dir=existing))
        except OSError as error:
            problem = f"{error.strerror} in '{existing}'"
    if problem is not None:
        raise UsageError(
            f"{key}: cannot create '{directory}' ({problem}). Point it at a writable "
            f"directory, e.g. {key}={example}"
        )


def checkpointing(
    config: ExperimentConfig,
    run_id: str,
    directory: Path | None = None,
    before_write: Callable[[], None] | None = None,
    upload: Callable[[Path], None] | None = None,
) -> Any:
    """The loop's `Checkpointing` for this run, its store opened in the run's directory
    (`directory`, for a resumed run: where its checkpoints are); `before_write` delivers the
    metrics logged so far before each checkpoint is put in place; with
    `checkpoint.mirror_to_mlflow`, `upload` sends each checkpoint to the run's artifacts."""
    from harness.checkpoints import Checkpointing

    section = config.checkpoint
    return Checkpointing(
        open_store(config, directory or checkpoint_dir(config, run_id)),
        every_n_steps=section.every_n_steps,
        every_n_epochs=section.every_n_epochs,
        every_n_minutes=section.every_n_minutes,
        metadata={"run_id": run_id, "experiment": config.tracking.experiment},
        before_write=before_write,
        after_write=upload if section.mirror_to_mlflow else None,
    )
