"""How a trial process is started and watched: the one place that knows where it runs.

A trial is told everything in one `TrialSpec` (its config, its study and trial, where it
tracks), written as JSON beside its log; `python -m experiments.search.trial SPEC.json` reads
it back. The supervisor hands a `Launcher` that file, the trial's slot and its log, and gets
back a `TrialProcess` it polls and stops. `LocalLauncher` starts that process on this
machine, with the slot's GPUs in `CUDA_VISIBLE_DEVICES` (set before TensorFlow is imported)
and a CPU slot's process pinned to its cores. Another launcher (a cluster's) plugs
in here without the supervisor changing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from experiments.search.slots import DEVICE_ENV, Slot
from experiments.search.space import apply
from tracking.owner import owner

TRIAL_MODULE = "experiments.search.trial"


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
    if len(slot.gpus) > 1:
        raw.setdefault("trainer", {})["distribute"] = "mirrored"
    tracking = raw.setdefault("tracking", {})
    tracking["run_name"] = run_name
    tracking["system_metrics_scope"] = "own"  # this trial's processes and GPUs, not the host's
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
    """Starts trial processes."""

    def launch(self, spec_file: Path, *, slot: Slot, log: Path) -> TrialProcess: ...


class LocalProcess:
    """A trial process on this machine."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.owner = owner(process.pid)

    def poll(self) -> int | None:
        return self._process.poll()

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def wait(self) -> int:
        return self._process.wait()


class LocalLauncher:
    """Starts each trial as a fresh Python process on this machine."""

    def launch(self, spec_file: Path, *, slot: Slot, log: Path) -> LocalProcess:
        env = {
            **os.environ,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA's ids are nvidia-smi's (and NVML's)
            "CUDA_VISIBLE_DEVICES": slot.visible,
            DEVICE_ENV: slot.name,
            "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # no memory held beyond what the trial uses
            "PYTHONUNBUFFERED": "1",
        }
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", TRIAL_MODULE, str(spec_file)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C on the search's terminal reaches the supervisor
                # only, which stops each trial once (a second signal would stop it at once,
                # mid-step).
                start_new_session=True,
            )
        if slot.cores:  # before the trial imports TensorFlow and starts its threads
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(process.pid, slot.cores)
        return LocalProcess(process)
