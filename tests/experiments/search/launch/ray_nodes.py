"""A real Ray cluster of two nodes on this machine, started as Ray's docs start one (`ray
start --head`, then `ray start --address`), each declaring 2 GPUs (Ray sets
`CUDA_VISIBLE_DEVICES` for each task; TensorFlow then finds no GPU and runs on the CPU), and
stopped by the pids of the processes it started (`ray stop` would stop every Ray process on
the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.paths import ROOT


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ray_processes() -> set[int]:
    found = set()
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "ray" in cmdline:
            found.add(process.pid)
    return found


@dataclass
class Node:
    node_id: str
    pids: set[int] = field(default_factory=set)

    def processes(self) -> list[psutil.Process]:
        """The node's processes and all they started (its workers, their trial processes)."""
        found: dict[int, psutil.Process] = {}
        for pid in self.pids:
            try:
                process = psutil.Process(pid)
                found[pid] = process
                found.update({child.pid: child for child in process.children(recursive=True)})
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def kill(self) -> None:
        """The node dies at once: SIGKILL to every process of it (its raylet, its workers,
        the trials they run)."""
        for process in self.processes():
            try:
                process.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass

    def checkpoint_root(self) -> Path:
        """Where its trials write their checkpoints (`HARNESS_CHECKPOINT_ROOT`)."""
        import tempfile

        return Path(tempfile.gettempdir(), "harness-ray", self.node_id[:12])


@dataclass
class Cluster:
    """Its address, its nodes, and the environment a process that joins it needs: the
    cluster's own authentication token (Ray's default token file is never written)."""

    address: str
    nodes: list[Node]
    env: dict[str, str]

    def stop(self) -> None:
        for node in self.nodes:
            processes = node.processes()
            for process in processes:
                try:
                    process.send_signal(signal.SIGTERM)
                except psutil.NoSuchProcess:
                    pass
            _, alive = psutil.wait_procs(processes, timeout=10)
            for process in alive:
                process.kill()
            shutil.rmtree(node.checkpoint_root(), ignore_errors=True)


def _ray(*args: str, auth: dict[str, str]) -> None:
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0", **auth}
    result = subprocess.run([ray, *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _node_id(pids: set[int]) -> str:
    """The node id its raylet was started with."""
    for pid in pids:
        try:
            for arg in psutil.Process(pid).cmdline():
                if arg.startswith("--node_id="):
                    return arg.removeprefix("--node_id=")
        except psutil.NoSuchProcess:
            continue
    raise AssertionError("no raylet among the processes ray start started")


def start_cluster(gpus_per_node: int = 2) -> Cluster:
    """A head node and a second node, each with 1 CPU and `gpus_per_node` GPUs."""
    import secrets

    port = free_port()
    address = f"127.0.0.1:{port}"
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    nodes = []
    for extra in (
        ["--head", f"--port={port}", "--include-dashboard=false"],
        [f"--address={address}"],
    ):
        before = _ray_processes()
        _ray("start", *extra, "--node-ip-address=127.0.0.1", "--num-cpus=1",
             f"--num-gpus={gpus_per_node}", "--disable-usage-stats", auth=auth)  # fmt: skip
        time.sleep(1.0)
        pids = _ray_processes() - before
        nodes.append(Node(_node_id(pids), pids))
    return Cluster(address, nodes, auth)
