"""System metrics of one run's own share of a host: its process tree, the CPU cores it may run
on, and the GPUs it can see.

MLflow's system-metrics monitor samples the whole host — every core, all memory and every GPU —
which tells nothing when several runs share a machine (a search runs one trial per GPU). These
monitors plug into MLflow's `SystemMetricsMonitor` in place of its own, so the values still
appear under "System metrics" in the UI:

- `system/process_cpu_utilization_percentage`: the process tree's CPU time over the wall time
  of the cores it may run on (its affinity), 100 = all of them busy;
- `system/process_memory_usage_megabytes`: the tree's resident memory;
- `system/gpu_<id>_utilization_percentage`, `system/gpu_<id>_memory_usage_megabytes` and
  `..._memory_usage_percentage` for each GPU in `CUDA_VISIBLE_DEVICES` only, `<id>` the GPU's
  host index as `nvidia-smi` numbers it (needs `nvidia-ml-py`, the `gpu` extra).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import psutil

from tracking.mlflow.mlflow_internals import BaseMetricsMonitor, add_sample, samples

_logger = logging.getLogger(__name__)


class ProcessMonitor(BaseMetricsMonitor):
    """CPU and memory of this process and its children (a run's metric writer among them)."""

    def __init__(self, pid: int | None = None) -> None:
        super().__init__()
        self._root = psutil.Process(pid)
        self._seen: dict[int, psutil.Process] = {}
        self._cores = len(self._root.cpu_affinity() or []) or psutil.cpu_count() or 1
        self._tree()  # prime: psutil's cpu_percent measures from each process's previous call

    def _tree(self) -> list[tuple[psutil.Process, float]]:
        try:
            members = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []
        sampled = []
        for member in members:
            known = self._seen.setdefault(member.pid, member)
            try:
                sampled.append((known, known.cpu_percent()))
            except psutil.Error:  # ended between listing and sampling
                self._seen.pop(member.pid, None)
        return sampled

    def collect_metrics(self) -> None:
        sampled = self._tree()
        if not sampled:
            return
        busy = sum(percent for _, percent in sampled)  # 100 per fully used core
        resident = 0
        for member, _ in sampled:
            try:
                resident += member.memory_info().rss
            except psutil.Error:
                pass
        add_sample(self, "process_cpu_utilization_percentage", busy / self._cores)
        add_sample(self, "process_memory_usage_megabytes", resident / 1e6)

    def aggregate_metrics(self) -> dict[str, float]:
        return _means(self)


def visible_gpu_ids(listed: str | None) -> list[str] | None:
    """The GPUs `CUDA_VISIBLE_DEVICES` names (`None`: it is unset, so every GPU). Ids are host
    indexes or `GPU-…` UUIDs; CUDA stops at the first entry it cannot parse, and so do we."""
    if listed is None:
        return None
    ids: list[str] = []
    for entry in listed.split(","):
        entry = entry.strip()
        if not (entry.isdigit() or entry.startswith(("GPU-", "MIG-"))):
            break
        ids.append(entry)
    return ids


class VisibleGPUMonitor(BaseMetricsMonitor):
    """Utilisation and memory of the GPUs this process can see, named by their host index."""

    def __init__(self, listed: str | None) -> None:
        import pynvml  # nvidia-ml-py; the caller skips GPU metrics without it

        pynvml.nvmlInit()
        super().__init__()
        self._nvml = pynvml
        wanted = visible_gpu_ids(listed)
        if wanted is None:
            wanted = [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self._handles: list[tuple[str, Any]] = []
        for gpu in wanted:
            if gpu.isdigit():
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(gpu))
            else:
                handle = pynvml.nvmlDeviceGetHandleByUUID(gpu)
            self._handles.append((str(pynvml.nvmlDeviceGetIndex(handle)), handle))

    @property
    def gpus(self) -> list[str]:
        return [index for index, _ in self._handles]

    def collect_metrics(self) -> None:
        nvml = self._nvml
        for index, handle in self._handles:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                utilisation = nvml.nvmlDeviceGetUtilizationRates(handle)
            except nvml.NVMLError as exc:
                _logger.warning("GPU %s metrics not read: %s", index, exc)
                continue
            add_sample(self, f"gpu_{index}_utilization_percentage", utilisation.gpu)
            add_sample(self, f"gpu_{index}_memory_usage_megabytes", memory.used / 1e6)
            add_sample(
                self,
                f"gpu_{index}_memory_usage_percentage",
                round(memory.used / memory.total * 100, 1),
            )

    def aggregate_metrics(self) -> dict[str, float]:
        return _means(self)


def own_monitors() -> list[BaseMetricsMonitor]:
    """This process tree's CPU and memory, and its visible GPUs' when NVML is there."""
    monitors: list[BaseMetricsMonitor] = [ProcessMonitor()]
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible_gpu_ids(listed) == []:
        return monitors  # a CPU slot: no GPU is this run's
    try:
        monitors.append(VisibleGPUMonitor(listed))
    except Exception as exc:  # no nvidia-ml-py, no driver, no GPU
        _logger.debug("no GPU system metrics: %s", exc)
    return monitors


def _means(monitor: BaseMetricsMonitor) -> dict[str, float]:
    """Each metric's mean over the interval, as MLflow's own monitors aggregate."""
    return {name: round(sum(v) / len(v), 1) for name, v in samples(monitor).items() if v}
