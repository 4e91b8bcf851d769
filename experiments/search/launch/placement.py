"""Where a search's trials run, chosen once from `--launcher` (or `search.launcher`) before
any study or run exists: this machine's `--devices` slots, or a Ray cluster, with what its
nodes must reach served to them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from experiments.config.search_schema import LauncherSpec
from experiments.errors import UsageError
from experiments.search.launch.base import Launcher
from experiments.search.launch.local import LocalLauncher
from experiments.search.launch.slots import parse_devices


class Placement(Protocol):
    launcher: Launcher
    direct_writers: int  # processes that open the study's storage themselves (SQLite: 1)

    @property
    def description(self) -> str:
        """`2 slot(s) (gpu0, gpu1)`: where the trials run, for the search's first line."""
        ...

    def reachable(self, storage_url: str, storage: Any, tracking_uri: str, folder: Path) -> Any:
        """A context giving the (storage URL, tracking URI) the trial processes use."""
        ...

    def close(self) -> None: ...


class LocalPlacement:
    """Trial processes on this machine, one per slot of `--devices`."""

    def __init__(self, devices: str | None, max_concurrent: int | None) -> None:
        slots = parse_devices(devices)[:max_concurrent]
        self.launcher: Launcher = LocalLauncher(slots)
        self.direct_writers = len(slots)  # every trial process
        self.description = f"{len(slots)} slot(s) ({', '.join(s.name for s in slots)})"

    @contextmanager
    def reachable(
        self, storage_url: str, storage: Any, tracking_uri: str, folder: Path
    ) -> Iterator[tuple[str, str]]:
        yield storage_url, tracking_uri  # the same machine: what the driver opens, they open

    def close(self) -> None:
        pass


class RayPlacement:
    """Trial processes wherever a Ray cluster places them."""

    def __init__(self, spec: LauncherSpec, address: str | None) -> None:
        from experiments.search.launch.ray_cluster import connect
        from experiments.search.launch.ray_launcher import RayLauncher

        self.cluster = connect(spec, address)
        self.launcher: Launcher = RayLauncher(
            self.cluster, shared_checkpoints=spec.shared_checkpoints
        )
        self.direct_writers = 1  # this driver: the trials reach a local storage through it
        asks = ", ".join(f"{amount:g} {name}" for name, amount in self.cluster.per_trial.items())
        self.description = (
            f"the Ray cluster {self.cluster.address} ({self.cluster.capacity()} at once, "
            f"{asks} each)"
        )

    @contextmanager
    def reachable(
        self, storage_url: str, storage: Any, tracking_uri: str, folder: Path
    ) -> Iterator[tuple[str, str]]:
        from experiments.search.launch.reach import storage_served, tracking_served

        host = self.cluster.driver_ip
        # The MLflow server first: its process is forked before the gRPC proxy's threads run.
        with tracking_served(tracking_uri, host, folder) as served_uri:
            with storage_served(storage_url, storage, host) as served_storage:
                yield served_storage, served_uri

    def close(self) -> None:
        self.cluster.close()


def choose(
    spec: LauncherSpec,
    *,
    launcher: str | None,
    devices: str | None,
    ray_address: str | None,
    max_concurrent: int | None,
) -> Placement:
    """The placement `--launcher` (else `search.launcher.name`) names.

    Raises:
        UsageError: an unknown launcher, `--devices` or `--ray-address` with the wrong one,
            or a cluster that cannot run a trial (`experiments.search.launch.ray_cluster`).
    """
    name = launcher or spec.name
    if name not in ("local", "ray"):
        raise UsageError(
            f"--launcher '{name}': trials run on this machine (local) or on a Ray cluster "
            "(ray): use --launcher local or --launcher ray"
        )
    concurrent = max_concurrent or spec.max_concurrent
    if name == "local":
        if ray_address is not None:
            raise UsageError(
                f"--ray-address {ray_address}: the local launcher runs trials on this machine; "
                "add --launcher ray to run them on that Ray cluster"
            )
        return LocalPlacement(devices, concurrent)
    if devices is not None:
        raise UsageError(
            f"--devices {devices}: with --launcher ray, Ray places each trial on the "
            "cluster's GPUs; leave --devices out (search.launcher.gpus_per_trial says how "
            "many GPUs a trial gets)"
        )
    return RayPlacement(spec.model_copy(update={"max_concurrent": concurrent}), ray_address)
