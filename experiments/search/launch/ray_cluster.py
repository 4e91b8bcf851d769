"""The Ray cluster a search runs on: connected to (or started) once, checked before any study
or run exists, and what it can hold.

`--ray-address HOST:PORT` (or `search.launcher.address`, or `RAY_ADDRESS`) joins a running
cluster; `auto` finds one started on this machine; none starts a local Ray instance for the
search (on 127.0.0.1, no dashboard unless `search.launcher.dashboard`), stopped at its end.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import socket
from dataclasses import dataclass
from typing import Any

from experiments.config.search_schema import LauncherSpec
from experiments.errors import UsageError

RAY_EXTRA = "pip install -e '.[ray]'"
_REACH_TIMEOUT_S = 3.0
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray() -> Any:
    """Ray, or the one line that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--launcher ray: Ray is not installed in this environment; install the ray "
            f"extra: {RAY_EXTRA}"
        ) from None
    return ray


@dataclass
class RayCluster:
    """A connection to a Ray cluster, and what each trial asks of it.

    Attributes:
        address: the cluster as named (`local` for an instance started for the search).
        driver_ip: this machine's address as the cluster's nodes reach it.
        per_trial: the resources each trial asks for (`GPU`, `CPU`).
    """

    ray: Any
    address: str
    driver_ip: str
    per_trial: dict[str, float]
    max_concurrent: int | None

    def capacity(self) -> int:
        """How many trials the cluster's live nodes hold at once (each node holds as many as
        fit its own resources), capped by `max_concurrent`."""
        held = sum(_fits(node, self.per_trial) for node in self.alive_nodes())
        return held if self.max_concurrent is None else min(held, self.max_concurrent)

    def close(self) -> None:
        self.ray.shutdown()

    def alive_nodes(self) -> list[dict[str, float]]:
        return [node["Resources"] for node in self.ray.nodes() if node.get("Alive")]


def connect(spec: LauncherSpec, address: str | None) -> RayCluster:
    """Join the cluster at `address` (else `spec.address`, else `RAY_ADDRESS`), or start a
    local instance; check that a trial fits one of its nodes.

    Raises:
        UsageError: Ray is missing, the address is malformed or does not answer, or no node
            has the resources one trial asks for.
    """
    named = address or spec.address or os.environ.get("RAY_ADDRESS")
    if not named:
        # Ray on Linux replaces 127.0.0.1 by the host's reachable address, unless it is told it
        # runs a single-machine instance (as on macOS): the search's own instance stays on
        # loopback. (Read when Ray is imported; its processes inherit it.)
        os.environ.setdefault(_SINGLE_MACHINE_ENV, "0")
        # Token authentication, as Ray starts a local instance by default, but with a token of
        # this search's own: Ray would write one to ~/.ray/auth_token, which every later
        # `ray start` on this machine would then pick up (and its nodes fail to join).
        if os.environ.setdefault("RAY_AUTH_MODE", "token") == "token":
            if not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    ray = import_ray()
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    # ray.init makes SIGTERM exit the driver at once; the search keeps its own handling (as
    # with the local launcher: its trials, orphaned, stop themselves at a checkpoint).
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        named = _init(ray, spec, named, quiet)
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    cluster = RayCluster(
        ray,
        named,
        ray.util.get_node_ip_address(),
        _per_trial(spec, ray.cluster_resources()),
        spec.max_concurrent,
    )
    try:
        _check_fits(cluster, named)
    except UsageError:
        cluster.close()
        raise
    return cluster


def _init(ray: Any, spec: LauncherSpec, named: str | None, quiet: dict[str, Any]) -> str:
    """Join the cluster `named`, or start a local instance; the cluster's name."""
    if named:
        _check_address(named)
        try:
            ray.init(address=named, **quiet)
        except (ConnectionError, RuntimeError) as error:
            raise UsageError(
                f"--ray-address {named}: cannot join the Ray cluster ({_first_line(error)}). "
                "Start one with ray start --head, or leave --ray-address out to start a local "
                "Ray instance"
            ) from None
    else:
        ray.init(
            address="local",
            include_dashboard=spec.dashboard,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            logging_level=logging.ERROR,  # its notices (token authentication on) are ours
        )
        named = "local"
    return named


def _per_trial(spec: LauncherSpec, resources: dict[str, float]) -> dict[str, float]:
    """A GPU per trial where the cluster has GPUs (no CPU reserved: TensorFlow's input
    threads share the node's cores), else a CPU, unless the launcher spec says otherwise."""
    gpus = spec.gpus_per_trial
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) > 0 else 0.0
    cpus = spec.cpus_per_trial
    if cpus is None:
        cpus = 0.0 if gpus > 0 else 1.0
    return {name: amount for name, amount in (("GPU", gpus), ("CPU", cpus)) if amount > 0}


def _fits(node: dict[str, float], per_trial: dict[str, float]) -> int:
    if not per_trial:
        return 0
    return min(math.floor(node.get(name, 0.0) / need + 1e-9) for name, need in per_trial.items())


def _check_fits(cluster: RayCluster, named: str) -> None:
    """Ray would wait forever for a trial no node can hold: say so before any trial starts."""
    if not cluster.per_trial:
        raise UsageError(
            "search.launcher: gpus_per_trial and cpus_per_trial are both 0, so a trial would "
            "ask Ray for nothing and every trial would run at once: set one, e.g. "
            "search.launcher.cpus_per_trial=1"
        )
    nodes = cluster.alive_nodes()
    if any(_fits(node, cluster.per_trial) for node in nodes):
        return
    for name, key in (("GPU", "gpus_per_trial"), ("CPU", "cpus_per_trial")):
        wanted = cluster.per_trial.get(name, 0.0)
        most = max((node.get(name, 0.0) for node in nodes), default=0.0)
        if wanted > most:
            raise UsageError(
                f"search.launcher.{key}={wanted:g}: no node of the Ray cluster ({named}, "
                f"{len(nodes)} node(s)) has that many {name}s (the most on one node: "
                f"{most:g}), so Ray would wait forever: ask for at most {most:g}, or add a "
                f"node with {wanted:g}"
            )
    raise UsageError(
        f"search.launcher: no node of the Ray cluster ({named}) has {cluster.per_trial} at "
        "once: ask for fewer GPUs or CPUs per trial"
    )


def _check_address(address: str) -> None:
    """A malformed or silent address is one line within seconds (Ray would retry for long)."""
    if address == "auto":
        return
    if address.startswith("ray://"):
        raise UsageError(
            f"--ray-address {address}: the Ray Client address runs the driver elsewhere; give "
            "the cluster's GCS address instead, HOST:PORT (6379 by default), from a machine "
            "of the cluster's network"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(
            f"--ray-address {address}: a Ray cluster's address is HOST:PORT (the head node's "
            "GCS port, 6379 by default), e.g. --ray-address 10.0.0.5:6379, or auto"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=_REACH_TIMEOUT_S):
            pass
    except OSError as error:
        raise UsageError(
            f"--ray-address {address}: nothing answers there ({error.strerror or error}). "
            "Check that the cluster's head node runs (ray status), or leave --ray-address "
            "out to start a local Ray instance"
        ) from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
