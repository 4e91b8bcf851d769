"""`host:pid:start` records of processes: which one writes a journal, trains a run or a trial,
and whether it still runs. A pid alone is reused; with its start time it names one process.
"""

from __future__ import annotations

import os
import socket

import psutil

__all__ = ["alive", "gone", "owner"]


def owner(pid: int | None = None) -> str:
    """`host:pid:start` of a process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    try:
        started = f"{psutil.Process(pid).create_time():.2f}"
    except psutil.NoSuchProcess:  # ended already
        started = "0"
    return f"{socket.gethostname()}:{pid}:{started}"


def gone(recorded: str | None) -> bool:
    """Whether the process `recorded` names has ended. False when it runs, when nothing is
    recorded, and for another host's process, which this host cannot tell."""
    if not recorded or recorded.count(":") < 2:
        return False
    host, pid, started = recorded.rsplit(":", 2)
    if host != socket.gethostname():
        return False
    try:
        return f"{psutil.Process(int(pid)).create_time():.2f}" != started
    except (psutil.NoSuchProcess, ValueError):
        return True


def alive(recorded: str | None) -> bool:
    """Whether the process `recorded` names runs on this host (False for another host's)."""
    if not recorded:
        return False
    host = recorded.rsplit(":", 2)[0]
    return host == socket.gethostname() and not gone(recorded)
