"""The launcher seam: what a trial is told, and how the supervisor starts and watches it.

A trial is told everything in one `TrialSpec` (its config, its study and trial, where it
tracks), written as JSON beside its log; `python -m experiments.search.trial SPEC.json` reads
it back. The supervisor asks a `Launcher` where trials may run now (its slots), hands it that
file, a free slot and the trial's log, and gets back a `TrialProcess` it polls and stops. The
launcher is the only thing that knows where a trial process runs: `LocalLauncher` on this
machine (`experiments.search.launch.local`), `RayLauncher` wherever a Ray cluster places it
(`experiments.search.launch.ray_launcher`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from experiments.search.launch.slots import DEVICE_ENV, Slot
from experiments.search.space import apply

TRIAL_MODULE = "experiments.search.trial"
# The exit status a launcher reports for a trial whose machine was lost with it (a Ray node
# that died): no process status exists, and the run is tagged `harness.exit: node lost`.
NODE_LOST = -1000
# A cluster's watcher of the trial (a Ray task's worker) that died while its machine lives
# (killed, out of memory): the orphaned trial stops, checkpointed, and hands itself back.
WORKER_LOST = -1001


@dataclass(frozen=True)
class TrialSpec:
    """One trial's whole brief.

    Attributes:
        storage: the Optuna storage URL; study: the study's name; trial_id: the trial's id
            in that storage (not its number).
        config: the trial's resolved experiment config (the base with the suggested values).
        tracking_uri: the MLflow store; parent_run_id: the study's parent run.
        log: the trial's log file (recorded as the run's tag `harness.trial_log`).
        metrics, directions: what the trial reports to Optuna, and which way is better.
        params: the values suggested for the search space, by config path.
        resume_run: for a retry, the run it continues from its last checkpoint.
    """

    storage: str
    study: str
    trial_id: int
    config: dict[str, Any]
    tracking_uri: str
    parent_run_id: str
    log: str
    metrics: list[str]
    directions: list[str]
    params: dict[str, Any]
    resume_run: str | None = None

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(dataclasses.asdict(self)))
        return path

    @classmethod
    def read(cls, path: Path) -> TrialSpec:
        return cls(**json.loads(path.read_text()))


def trial_config(
    base: dict[str, Any], values: dict[str, Any], *, slot: Slot, run_name: str
) -> dict[str, Any]:
    """The raw config of one trial: `base` with each suggested config path set, run over
    the slot's GPUs (mirrored when there are several) and tracked under `run_name` with
    system metrics of its own share of the host."""
    raw = apply(base, values)
    if slot.gpu_count > 1:
        raw.setdefault("trainer", {})["distribute"] = "mirrored"
    tracking = raw.setdefault("tracking", {})
    tracking["run_name"] = run_name
    tracking["system_metrics_scope"] = "own"  # this trial's processes and GPUs, not the host's
    if slot.mirror_checkpoints:  # its node may die: the retry elsewhere resumes from MLflow
        raw.setdefault("checkpoint", {})["mirror_to_mlflow"] = True
    return raw


class TrialProcess(Protocol):
    """A started trial, as the supervisor watches it."""

    @property
    def owner(self) -> str:
        """`host:pid:start` of the process, recorded in the trial (a pid alone is reused)."""
        ...

    def poll(self) -> int | None:
        """The exit status once it ended (negative: the signal that killed it), else None."""
        ...

    def stop(self) -> None:
        """Ask it to stop at its next step boundary, checkpointed (SIGTERM)."""
        ...

    def wait(self) -> int:
        """Wait until it ended; its exit status."""
        ...


class Launcher(Protocol):
    """Starts trial processes, and knows where they may run."""

    def slots(self) -> Sequence[Slot]:
        """Where trials may run now, one trial per slot (a cluster's may grow and shrink)."""
        ...

    def launch(self, spec_file: Path, *, slot: Slot, log: Path) -> TrialProcess: ...


def start_trial_process(
    spec_file: Path,
    log: Path,
    *,
    gpus: str,
    device: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.Popen[bytes]:
    """`python -m experiments.search.trial SPEC` on this machine, its output in `log`, seeing
    only the GPUs `gpus` (`CUDA_VISIBLE_DEVICES`, set before TensorFlow is imported; "" hides
    them all) with memory growth on, its slot named `device` (the run's `harness.device`).

    Its own session: a Ctrl-C on the search's terminal reaches the supervisor only, which
    stops each trial once (a second signal would stop it at once, mid-step); on a cluster's
    node, a signal to the watching worker is not the trial's either."""
    environment = {
        **os.environ,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA's ids are nvidia-smi's (and NVML's)
        "CUDA_VISIBLE_DEVICES": gpus,
        DEVICE_ENV: device,
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # no memory held beyond what the trial uses
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", TRIAL_MODULE, str(spec_file)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
            start_new_session=True,
        )
