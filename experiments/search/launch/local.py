"""`LocalLauncher`: each trial a fresh Python process on this machine, one per slot of
`--devices`, with the slot's GPUs in `CUDA_VISIBLE_DEVICES` (set before TensorFlow is
imported) and a CPU slot's process pinned to its cores.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from experiments.search.launch.base import start_trial_process
from experiments.search.launch.slots import Slot
from tracking.owner import owner


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
    """Starts each trial as a fresh Python process on this machine, one per slot."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        self._slots = list(slots)

    def slots(self) -> list[Slot]:
        return self._slots

    def launch(self, spec_file: Path, *, slot: Slot, log: Path) -> LocalProcess:
        process = start_trial_process(spec_file, log, gpus=slot.visible, device=slot.name)
        if slot.cores:  # before the trial imports TensorFlow and starts its threads
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(process.pid, slot.cores)
        return LocalProcess(process)
