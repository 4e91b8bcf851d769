"""A run's own system metrics: its process tree's CPU and memory over its own cores, and only
the GPUs `CUDA_VISIBLE_DEVICES` names."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tracking.mlflow.mlflow_internals import samples
from tracking.mlflow.system_metrics import ProcessMonitor, own_monitors, visible_gpu_ids


@pytest.mark.parametrize(
    ("listed", "expected"),
    [
        (None, None),  # unset: every GPU
        ("", []),  # a CPU slot
        ("3", ["3"]),
        ("0, 2", ["0", "2"]),
        ("GPU-8f2c1d,1", ["GPU-8f2c1d", "1"]),
        ("MIG-4a1b", ["MIG-4a1b"]),
        ("1,x,2", ["1"]),  # CUDA stops at the first entry it cannot parse
        ("-1", []),
    ],
)
def test_visible_gpu_ids_reads_cuda_visible_devices_as_cuda_does(
    listed: str | None, expected: list[str] | None
) -> None:
    assert visible_gpu_ids(listed) == expected


def test_the_process_monitor_counts_its_children_over_its_own_cores() -> None:
    monitor = ProcessMonitor()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core, all of it
    try:
        time.sleep(0.2)
        monitor.collect_metrics()  # first sight of the child: primes its CPU counter
        time.sleep(1.0)
        monitor.collect_metrics()
    finally:
        busy.kill()
        busy.wait()
    cpu = samples(monitor)["process_cpu_utilization_percentage"][-1]
    cores = len(os.sched_getaffinity(0))
    assert cpu == pytest.approx(100 / cores, abs=35 / cores)  # one busy core of `cores`
    memory = samples(monitor)["process_memory_usage_megabytes"][-1]
    assert memory > 5  # this interpreter and its child, resident
    aggregated = monitor.aggregate_metrics()
    assert set(aggregated) == {
        "process_cpu_utilization_percentage",
        "process_memory_usage_megabytes",
    }


def test_a_cpu_slot_monitors_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert [type(m).__name__ for m in own_monitors()] == ["ProcessMonitor"]
