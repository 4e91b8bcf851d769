"""`RayLauncher`: each trial a fresh Python process on whichever node of a Ray cluster holds
its resources.

A Ray task asks for the trial's GPUs (or CPUs) and, on the node Ray places it, starts the trial
process with Ray's GPU ids in `CUDA_VISIBLE_DEVICES` (before TensorFlow is imported) and
watches it until it ends: the task is the process's parent, so a trial whose task is gone
(its driver died, and Ray stopped the driver's tasks) stops at a checkpoint and hands itself
back, as under a local supervisor. The supervisor polls the task: its result is the exit
status; a node that died with it is `NODE_LOST`, failed and retried from the trial's
checkpoint (mirrored to MLflow unless `shared_checkpoints`) on another node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from experiments.run.checkpoints import ROOT_ENV
from experiments.search.launch.base import NODE_LOST, WORKER_LOST, start_trial_process
from experiments.search.launch.ray_cluster import RayCluster
from experiments.search.launch.slots import NODE_ENV, Slot
from experiments.search.recovery import CLUSTER_TASK

_LOG_TAIL_BYTES = 1 << 20  # the part of a trial's log sent back from a node that is not ours
_CAPACITY_EVERY_S = 5.0  # how often the cluster's size is read again (nodes join and leave)


class RayProcess:
    """A trial process on a Ray node, as its task reports it."""

    def __init__(self, ray: Any, ref: Any, log: Path) -> None:
        self._ray, self._ref, self._log = ray, ref, log
        self._code: int | None = None
        self.owner = f"{CLUSTER_TASK}{ref.task_id().hex()[:16]}"

    def poll(self) -> int | None:
        if self._code is None:
            ready, _ = self._ray.wait([self._ref], timeout=0)
            if ready:
                self._code = self._result()
        return self._code

    def stop(self) -> None:
        """Cancel the task: it SIGTERMs the trial, which stops at a step boundary."""
        if self.poll() is None:
            self._ray.cancel(self._ref)

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.1)
        assert self._code is not None
        return self._code

    def _result(self) -> int:
        exceptions = self._ray.exceptions
        try:
            code, log_tail = self._ray.get(self._ref)
        except exceptions.NodeDiedError:
            return NODE_LOST
        except exceptions.TaskCancelledError:  # cancelled before it started the process
            return -signal.SIGTERM
        except exceptions.RayError:  # its worker died (killed, out of memory)
            return WORKER_LOST
        if not self._log.exists():  # written on another machine: its tail, here
            self._log.write_text(log_tail)
        return int(code)


class RayLauncher:
    """Starts each trial on the Ray cluster as one task holding the trial's resources; as
    many slots as the cluster's live nodes hold trials at once."""

    def __init__(self, cluster: RayCluster, *, shared_checkpoints: bool) -> None:
        self.cluster = cluster
        self.shared_checkpoints = shared_checkpoints
        self._task = cluster.ray.remote(max_retries=0)(run_on_node)  # we retry, not Ray
        self._slots: list[Slot] = []
        self._read_at = 0.0

    def slots(self) -> list[Slot]:
        if time.monotonic() - self._read_at > _CAPACITY_EVERY_S:
            self._read_at = time.monotonic()
            gpus = int(self.cluster.per_trial.get("GPU", 0))
            self._slots = [
                Slot(f"ray{i}", placed_gpus=gpus, mirror_checkpoints=not self.shared_checkpoints)
                for i in range(self.cluster.capacity())
            ]
        return self._slots

    def launch(self, spec_file: Path, *, slot: Slot, log: Path) -> RayProcess:
        resources = self.cluster.per_trial
        ref = self._task.options(
            num_gpus=resources.get("GPU", 0),
            num_cpus=resources.get("CPU", 0),
            name=f"harness {spec_file.stem}",
        ).remote(
            spec_file.read_text(),
            str(spec_file.resolve()),
            str(log.resolve()),
            os.getcwd(),
            self.shared_checkpoints,
        )
        return RayProcess(self.cluster.ray, ref, log)


def run_on_node(
    spec_text: str, spec_path: str, log_path: str, cwd: str, shared_checkpoints: bool
) -> tuple[int, str]:
    """The Ray task: start the trial process on this node and wait for it; its exit status
    and the tail of its log. A cancel (the driver's Ctrl-C) stops the trial at a step
    boundary, checkpointed."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    gpus = [str(gpu) for gpu in ray.get_gpu_ids()]
    spec, log = _node_paths(Path(spec_path), Path(log_path), node_id)
    spec.write_text(spec_text)
    env = {NODE_ENV: f"{ray.util.get_node_ip_address()}/{node_id[:8]}"}
    if not shared_checkpoints:  # on this node's own disk, mirrored to MLflow
        env[ROOT_ENV] = str(Path(tempfile.gettempdir(), "harness-ray", node_id[:12]))
    process = start_trial_process(
        spec,
        log,
        gpus=",".join(gpus),  # "" hides every GPU: a CPU trial
        device="gpu" + "+".join(gpus) if gpus else "cpu",
        env=env,
        cwd=cwd if os.path.isdir(cwd) else None,
    )
    try:
        code = _wait(process)
    except KeyboardInterrupt:  # ray.cancel: stop it as a Ctrl-C on a local search would
        process.send_signal(signal.SIGTERM)
        code = process.wait()
    return code, _tail(log)


def _wait(process: subprocess.Popen[bytes]) -> int:
    """Its exit status, waited for in short steps: Ray's cancel raises KeyboardInterrupt
    between two Python instructions, never inside one blocking wait."""
    while True:
        try:
            return process.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue


def _node_paths(spec: Path, log: Path, node_id: str) -> tuple[Path, Path]:
    """The driver's paths where this node can write them (a shared or the same disk), else
    a folder of this node's own."""
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        return spec, log
    except OSError:
        folder = Path(tempfile.gettempdir(), "harness-ray", node_id[:12], "trials")
        folder.mkdir(parents=True, exist_ok=True)
        return folder / spec.name, folder / log.name


def _tail(log: Path) -> str:
    with open(log, "rb") as file:
        file.seek(max(0, log.stat().st_size - _LOG_TAIL_BYTES))
        return file.read().decode(errors="replace")
