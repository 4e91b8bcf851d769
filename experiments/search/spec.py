"""What a trial process is given: its config, its study and trial, where it tracks.

The supervisor writes a `TrialSpec` as JSON beside the trial's log; the trial process
(`python -m experiments.search.trial SPEC.json`) reads it back. Nothing else crosses.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.search.slots import Slot
from experiments.search.space import apply


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
