"""Where trial processes run, and how they are started and watched.

`base`: the launcher seam (`Launcher`, `TrialProcess`) and what a trial is told
(`TrialSpec`); `slots`: this machine's `--devices`; `local`: a process per slot here;
`ray_cluster`, `ray_launcher`: a Ray cluster, and a task per trial on its nodes; `reach`: the
study's storage and the MLflow store, served to the nodes when they are local; `placement`:
which of these `--launcher` chose.

May import: what `experiments.search` may (ray only in `ray_cluster` and `ray_launcher`,
when the Ray launcher is asked for).
"""

from experiments.search.launch.base import (
    NODE_LOST,
    WORKER_LOST,
    Launcher,
    TrialProcess,
    TrialSpec,
    trial_config,
)
from experiments.search.launch.local import LocalLauncher
from experiments.search.launch.slots import DEVICE_ENV, NODE_ENV, Slot, parse_devices

__all__ = [
    "DEVICE_ENV",
    "NODE_ENV",
    "NODE_LOST",
    "Launcher",
    "LocalLauncher",
    "Slot",
    "TrialProcess",
    "TrialSpec",
    "WORKER_LOST",
    "parse_devices",
    "trial_config",
]
