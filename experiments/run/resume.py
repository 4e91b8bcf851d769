"""`harness resume RUN_ID`: find a run's config and latest intact checkpoint, refuse what
cannot continue it, and say which settings changed. Everything here runs before training."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.config.loader import load_config
from experiments.config.schema import ExperimentConfig, flatten
from experiments.errors import UsageError, first_line
from experiments.run.checkpoints import MIRROR, TAG, checkpoint_dir, open_store
from experiments.tracking_setup import PROCESS_TAG, tracking_store

# What a resumed run may change: how long it trains, how it shows progress, where it tracks.
SAFE_TO_CHANGE = (
    "trainer.epochs",
    "trainer.progress",
    "tracking.uri",
    "tracking.tensorboard_dir",
    "tracking.system_metrics_every_s",
    "tracking.system_metrics_scope",
)
CONFIG_ARTIFACT = "config.yaml"


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run continues from."""

    run_id: str
    directory: Path  # the run's checkpoint directory
    step: int
    epoch: int
    batch: int
    state: dict[str, Any] | None  # None: the run never trained, and starts from the beginning
    changed: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    finished: bool = False  # nothing to train: it ended FINISHED unchanged, or has trained
    # its trainer.epochs already; `epoch` then says how many epochs it trained


def find_resume_point(
    run_id: str,
    tracking_uri: str,
    overrides: list[str],
    config: ExperimentConfig | None = None,
) -> tuple[ExperimentConfig, ResumePoint]:
    """The run's config with `overrides` (or `config`, from `harness run CONFIG --resume`,
    checked against the run's), and its latest intact checkpoint.

    Raises:
        UsageError: no such run, no config or checkpoint recorded, checkpoint files missing
            or all damaged, or overrides that change what a resume cannot.
    """
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    from tracking.mlflow import RunNotFound
    from tracking.owner import alive

    runs = tracking_store(tracking_uri, create=False)
    try:
        run = runs.get_run(run_id)
    except RunNotFound:
        raise UsageError(
            f"harness resume: there is no run '{run_id}' at '{tracking_uri}'. Pass the run id "
            "`harness run` printed (or see harness runs), with the --tracking-uri it used"
        ) from None
    except (MlflowException, RequestException, OSError) as error:  # unreachable, unreadable
        raise UsageError(
            f"harness resume: cannot read run '{run_id}' at '{tracking_uri}': "
            f"{first_line(error)}. Check that the store or server is reachable, or pass the "
            "--tracking-uri the run used"
        ) from None
    process = run.data.tags.get(PROCESS_TAG)
    if run.info.status == "RUNNING" and alive(process):
        pid = process.rsplit(":", 2)[1]  # type: ignore[union-attr]
        raise UsageError(
            f"harness resume: run '{run_id}' is still running (process {pid} on this host): "
            f"stop it first (kill {pid}: it saves a checkpoint and ends KILLED), then resume"
        )
    # A run killed before it logged a step can start from the beginning, in the same run.
    never_trained = not any(key.startswith("step/") for key in run.data.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = runs.download_artifact(run_id, CONFIG_ARTIFACT, tmp)
        except FileNotFoundError:
            if config is None or not never_trained:
                raise UsageError(
                    f"harness resume: run '{run_id}' has no {CONFIG_ARTIFACT} artifact to "
                    "resume its config from (it stopped before it logged one). Start it with "
                    f"its config: harness run CONFIG --resume {run_id}"
                ) from None
            local = None
        shown = f"run {run_id}'s {CONFIG_ARTIFACT}"
        if local is None:
            assert config is not None  # (without the artifact, the config was given)
            original = config
        else:
            original = load_config(local, shown_as=shown)
            if config is None:
                config = load_config(local, overrides, shown_as=shown)
    directory = run.data.tags.get(TAG) or (
        str(checkpoint_dir(config, run_id)) if never_trained else None
    )
    if not directory:
        raise UsageError(
            f"harness resume: run '{run_id}' has no checkpoint: it recorded no checkpoint "
            f"directory (tag {TAG}) and was not started by harness run. Start a new run "
            "with harness run"
        )
    changed = _changes(original, config)
    refused = sorted(key for key in changed if key not in SAFE_TO_CHANGE)
    if refused:
        shown = ", ".join(f"{k} ({changed[k][0]} -> {changed[k][1]})" for k in refused)
        raise UsageError(
            f"harness resume: run '{run_id}' cannot continue with other settings: {shown}. "
            f"Only {', '.join(SAFE_TO_CHANGE)} may change on resume; start a new run with "
            "harness run for the rest"
        )
    local = Path(directory)
    if run.info.status == "FINISHED" and not changed:
        trained = run.data.tags.get("harness.epochs_trained", "")
        epochs = int(trained) if trained.isdigit() else config.trainer.epochs
        return config, ResumePoint(run_id, local, 0, epochs, 0, None, changed, finished=True)
    if not local.is_dir():  # on another machine (a lost Ray node): its mirror, if it has one
        # (even with no step logged: the points still on their way may have died with it)
        local = _from_mirror(runs, run_id, local, config)
    point = _latest_checkpoint(run_id, local, config, changed, never_trained)
    if point.state is not None and point.epoch >= config.trainer.epochs:
        return config, dataclasses.replace(point, finished=True)  # fewer epochs than trained
    return config, point


def _from_mirror(runs: Any, run_id: str, directory: Path, config: ExperimentConfig) -> Path:
    """Where the run's mirrored checkpoint (`checkpoint.mirror_to_mlflow`) is put, downloaded
    from its artifacts, when the directory it was written to is not on this machine."""
    import json
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        try:
            mirrored = runs.download_artifact(run_id, MIRROR, tmp)
            sequence = int(json.loads((mirrored / "manifest.json").read_text())["sequence"])
        except (OSError, ValueError, KeyError):
            return directory  # nothing mirrored: reported as missing below
        for target in (directory, checkpoint_dir(config, run_id).resolve()):
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError:
                continue  # the other machine's path: use this machine's default instead
            shutil.move(str(mirrored), target / f"ckpt-{sequence:06d}")
            return target
    return directory


def _latest_checkpoint(
    run_id: str,
    directory: Path,
    config: ExperimentConfig,
    changed: dict[str, Any],
    never_trained: bool,
) -> ResumePoint:
    from harness.checkpoints import DamagedCheckpoint, PickledCheckpoint

    if never_trained and not any(directory.glob("ckpt-*")):  # killed before its first save
        return ResumePoint(run_id, directory, 0, 0, 0, None, changed)
    if not directory.is_dir():
        raise UsageError(
            f"harness resume: the checkpoints of run '{run_id}' are missing: '{directory}' "
            "does not exist and none was mirrored to MLflow. Restore that directory, run on "
            "the machine that holds it, or set checkpoint.mirror_to_mlflow=true next time"
        )
    store = open_store(config, directory)
    try:
        loaded = store.load_latest()
    except (DamagedCheckpoint, PickledCheckpoint) as error:
        raise UsageError(f"harness resume: run '{run_id}': {error}") from None
    if loaded is None:
        raise UsageError(
            f"harness resume: run '{run_id}' trained, yet its checkpoints in '{directory}' are "
            "gone (deleted by hand?): start a new run with harness run"
        )
    info, state = loaded
    owner = info.metadata.get("run_id")
    if owner != run_id:
        raise UsageError(
            f"harness resume: the checkpoints in '{directory}' belong to run '{owner}', not "
            f"'{run_id}'"
        )
    return ResumePoint(run_id, directory, info.step, info.epoch, info.batch, state, changed)


def _changes(
    before: ExperimentConfig, after: ExperimentConfig
) -> dict[str, tuple[str | None, str | None]]:
    old, new = flatten(before), flatten(after)
    return {
        key: (old.get(key), new.get(key))
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    }
