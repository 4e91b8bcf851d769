"""A small tmpfs for the full-disk tests: a real filesystem that runs out of space."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(path: Path, size_kb: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_kb` KiB at `path` (root, as in CI here); unmounted after.

    `resize(path, kb)` grows it, as a user freeing space would."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:  # not root: a full disk cannot be made here
        pytest.skip(f"cannot mount a tmpfs ({mounted.stderr.strip()}): run as root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size_kb: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(path)], check=True)


def fill(path: Path) -> None:
    """Take every free block of the filesystem at `path`."""
    with open(path / "filler", "wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError:
            pass
