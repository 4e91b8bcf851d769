"""Where trials run on this machine: the slots of `--devices`, one trial process per slot.

`0,1,2,3` is a GPU per trial, `0,1:2,3` two GPUs per trial (the run mirrors over them),
`cpu:2` two CPU slots, each pinned to its own share of the cores; the default is every
visible GPU, else one CPU slot.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from experiments.errors import UsageError

# The slot a trial process runs on (`gpu0`, `gpu0+1`, `cpu1`), set by its launcher and recorded
# as the run's tag `harness.device`.
DEVICE_ENV = "HARNESS_DEVICE"
# The machine a trial process runs on, where its launcher knows better than its host name (a
# Ray node: `ip/node id`); recorded as the run's tag `harness.node`.
NODE_ENV = "HARNESS_NODE"


@dataclass(frozen=True)
class Slot:
    """Where one trial runs: GPU ids (`CUDA_VISIBLE_DEVICES`), or none for a CPU slot; a CPU
    slot may own a share of the host's cores (its process is pinned to them). A cluster's slot
    names no GPU ids (the cluster assigns them when it places the trial), only how many
    (`placed_gpus`), and whether the trial's checkpoints must be mirrored to MLflow (its node
    may die, and its retry run elsewhere)."""

    name: str
    gpus: tuple[str, ...] = ()
    cores: tuple[int, ...] = ()
    placed_gpus: int = 0
    mirror_checkpoints: bool = False

    @property
    def gpu_count(self) -> int:
        return len(self.gpus) or self.placed_gpus

    @property
    def visible(self) -> str:
        return ",".join(self.gpus)  # "" hides every GPU: a CPU slot


def parse_devices(text: str | None) -> list[Slot]:
    """`0,1,2,3` (a GPU each), `0,1:2,3` (two GPUs each), `cpu:2` (two CPU slots); default:
    every visible GPU, else one CPU slot.

    Raises:
        UsageError: the text is not one of those forms; the message shows them.
    """
    if text is None:
        return [Slot(f"gpu{g}", (g,)) for g in _visible_gpus()] or [Slot("cpu0")]
    text = text.strip()
    if text.startswith("cpu"):
        count = text.removeprefix("cpu").removeprefix(":") or "1"
        if not count.isdigit() or int(count) < 1:
            raise UsageError(
                f"--devices '{text}': CPU slots are written cpu:N with N ≥ 1, e.g. --devices cpu:2"
            )
        return _cpu_slots(int(count))
    groups = [tuple(g.strip() for g in group.split(",")) for group in text.split(":")]
    ids = [gpu for group in groups for gpu in group]
    if not ids or any(not gpu.isdigit() for gpu in ids):
        raise UsageError(
            f"--devices '{text}': GPU ids are integers, comma-separated, one group per trial "
            "separated by ':', e.g. --devices 0,1,2,3 or --devices 0,1:2,3 or --devices cpu:2"
        )
    if len(set(ids)) != len(ids):
        raise UsageError(f"--devices '{text}': a GPU appears twice; each GPU belongs to one slot")
    _check_visible(text, ids)
    if ":" not in text:  # one GPU per trial
        return [Slot(f"gpu{gpu}", (gpu,)) for gpu in ids]
    return [Slot("gpu" + "+".join(group), group) for group in groups]


# Set to 1, GPU ids need not be visible: trials are labelled with them and see no GPU (tests
# of the device pool on a machine without one).
PLACEHOLDER_GPUS = "HARNESS_PLACEHOLDER_GPUS"


def _check_visible(text: str, ids: list[str]) -> None:
    if os.environ.get(PLACEHOLDER_GPUS) == "1":
        return
    visible = _visible_gpus()
    absent = [gpu for gpu in ids if gpu not in visible]
    if absent:
        named = f"GPU {absent[0]} is" if len(absent) == 1 else f"GPUs {', '.join(absent)} are"
        raise UsageError(
            f"--devices '{text}': {named} not visible on this machine "
            f"(visible GPUs: {', '.join(visible) or 'none'}). Name visible GPUs (nvidia-smi "
            "lists them), or use CPU slots: --devices cpu:N"
        )


def _cpu_slots(count: int) -> list[Slot]:
    """`count` CPU slots, each pinned to its own share of this process's cores when there are
    enough (TensorFlow sizes its thread pools to the cores it may use, so two trials do not
    fight over the same ones); more slots than cores share them all."""
    cores = sorted(os.sched_getaffinity(0))
    if count == 1 or count > len(cores):
        return [Slot(f"cpu{i}") for i in range(count)]
    return [Slot(f"cpu{i}", cores=tuple(cores[i::count])) for i in range(count)]


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]
