"""How a trial process is started and watched: the one place that knows where it runs.

The supervisor hands a `Launcher` a trial's spec file, its slot and its log, and gets back a
`TrialProcess` it polls and stops. `LocalLauncher` starts `python -m experiments.search.trial`
on this machine, with the slot's GPUs in `CUDA_VISIBLE_DEVICES` (set before TensorFlow is
imported) and a CPU slot's process pinned to its cores. Another launcher (a cluster's) plugs
in here without the supervisor changing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from experiments.search.recovery import owner
from experiments.search.slots import Slot

TRIAL_MODULE = "experiments.search.trial"


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
