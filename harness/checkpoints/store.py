"""`CheckpointStore`: a run's checkpoints, atomic, retained by policy, written off the
training thread.

Each checkpoint is a directory in the format of `harness.checkpoints.format`. A save is
written aside (`.tmp-...`), fsynced, then renamed into place, so a crash or a full disk
mid-write leaves the checkpoints before it intact; loading verifies the checksum and falls back
to the one before a damaged checkpoint, with a warning naming both.

The training thread only captures (copies of the values); pickling, writing, fsync and
retention run on a writer thread. A save that finds the previous one still writing waits for
it (`stall_s` adds up that wait).

Example:
    >>> store = CheckpointStore("checkpoints/run-1", keep_last=2)
    >>> store.save(loop.capture_state(), step=120, epoch=2, batch=40)
    >>> store.wait()
    >>> info, state = store.load_latest()
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from harness.checkpoints.format import (
    FORMAT,
    MANIFEST_FILE,
    NAME,
    STATE_FILE,
    TMP,
    CheckpointInfo,
    DamagedCheckpoint,
    PickledCheckpoint,
    deserialise,
    fsync_directory,
    info_of,
    read_manifest,
    serialise,
    write_synced,
)
from harness.state import materialize

__all__ = ["CheckpointStore", "CheckpointsFailing"]

MAX_FAILURES = 3  # saves in a row that may fail before the run stops


class CheckpointsFailing(RuntimeError):
    """Checkpoints cannot be written (a full disk, a lost mount): the run cannot go on safely;
    the message names the directory, the error and the last checkpoint written."""


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return repr(error)


class CheckpointStore:
    """The checkpoints of one run, in one directory that holds nothing else.

    Args:
        directory: created if missing; only `ckpt-*` entries in it are ever deleted.
        keep_last: the newest checkpoints kept (at least 1).
        keep_best: besides those, the best checkpoints by `monitor` kept.
        monitor: the epoch metric `keep_best` ranks by (e.g. `val_loss`).
        mode: `min` or `max`: which way `monitor` is better.
        keep_every_n_epochs: checkpoints taken at the end of every n-th epoch are never deleted.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        keep_last: int = 2,
        keep_best: int = 0,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        keep_every_n_epochs: int | None = None,
    ) -> None:
        if keep_last < 1:
            raise ValueError(f"`keep_last` must be >= 1. Received: keep_last={keep_last}")
        if keep_best and not monitor:
            raise ValueError("`keep_best` ranks checkpoints by `monitor`: name the metric")
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max'. Received: mode={mode!r}")
        self.directory = Path(directory)
        self.keep_last, self.keep_best = keep_last, keep_best
        self.monitor, self.mode = monitor, mode
        self.keep_every_n_epochs = keep_every_n_epochs
        self.directory.mkdir(parents=True, exist_ok=True)
        for entry in self.directory.iterdir():  # what a crash mid-write left behind
            if TMP.fullmatch(entry.name):
                shutil.rmtree(entry, ignore_errors=True)
        # Every ckpt-N counts, readable or not: a new checkpoint never takes a damaged one's name.
        existing = [
            int(match.group(1))
            for entry in self.directory.iterdir()
            if (match := NAME.fullmatch(entry.name))
        ]
        self._sequence = max(existing, default=0)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._failures = 0  # writes failed in a row
        self.stall_s = 0.0  # time save() waited for the previous write
        self.write_s: list[float] = []  # time each write took on the writer thread

    # Saving

    def save(
        self,
        state: Mapping[str, Any],
        *,
        step: int,
        epoch: int,
        batch: int,
        epoch_end: bool = False,
        metrics: Mapping[str, float] | None = None,
        metadata: Mapping[str, Any] | None = None,
        before_write: Callable[[], None] | None = None,
        after_write: Callable[[Path], None] | None = None,
    ) -> Path:
        """Write `state` on the writer thread; returns where it will be once written.

        `before_write` runs on that thread before the checkpoint is renamed into place,
        `after_write` after, with its path.
        """
        started = time.perf_counter()
        self._join()
        self.stall_s += time.perf_counter() - started
        self._sequence += 1
        value = None if self.monitor is None else (metrics or {}).get(self.monitor)
        every = self.keep_every_n_epochs
        manifest = {
            "format": FORMAT,
            "sequence": self._sequence,
            "step": int(step),
            "epoch": int(epoch),
            "batch": int(batch),
            "epoch_end": bool(epoch_end),
            "monitor": None if value is None else float(value),
            "metrics": {key: float(v) for key, v in (metrics or {}).items()},
            "permanent": bool(epoch_end and every and epoch > 0 and epoch % every == 0),
            "saved_at": time.time(),
            "metadata": dict(metadata or {}),
        }
        path = self.directory / f"ckpt-{self._sequence:06d}"
        self._thread = threading.Thread(
            target=self._write_guarded,
            args=(path, dict(state), manifest, before_write, after_write),
            daemon=False,
        )
        self._thread.start()
        return path

    def wait(self, *, final: bool = False) -> None:
        """Block until the last save is on disk.

        Raises:
            CheckpointsFailing: the last save failed and was the `final` one, or
                `MAX_FAILURES` saves in a row failed.
        """
        self._join(final=final)

    @property
    def last_failed(self) -> bool:
        """Whether the last save has ended, and failed: the next one should not wait."""
        thread = self._thread
        return self._failures > 0 and (thread is None or not thread.is_alive())

    def _join(self, *, final: bool = False) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is None:
            return
        error, self._error = self._error, None
        if final or self._failures >= MAX_FAILURES:
            last = self.checkpoints()
            kept = f"{last[-1].path.name} (step {last[-1].step})" if last else "none"
            failed = "the last save" if self._failures == 1 else f"the last {self._failures} saves"
            raise CheckpointsFailing(
                f"checkpoints cannot be written to {self.directory} ({_reason(error)}; "
                f"{failed} failed); the last one written, {kept}, is intact. Free space "
                "there (or point checkpoint.dir elsewhere) and resume"
            ) from error
        warnings.warn(
            f"a checkpoint could not be written ({_reason(error)}); the checkpoints before it "
            f"are intact in {self.directory}, and the next update saves again",
            stacklevel=3,
        )

    def _write_guarded(
        self,
        path: Path,
        state: dict[str, Any],
        manifest: dict[str, Any],
        before_write: Callable[[], None] | None,
        after_write: Callable[[Path], None] | None = None,
    ) -> None:
        started = time.perf_counter()
        try:
            self._write(path, state, manifest, before_write)
            self._retain()
            self._failures = 0
        except BaseException as error:  # reported on the training thread at the next save
            self._error = error
            self._failures += 1
        self.write_s.append(time.perf_counter() - started)
        if after_write is not None and self._error is None:
            try:
                after_write(path)
            except Exception as error:
                warnings.warn(f"after checkpoint {path.name} was written: {error!r}", stacklevel=1)

    def _write(
        self,
        path: Path,
        state: dict[str, Any],
        manifest: dict[str, Any],
        before_write: Callable[[], None] | None = None,
    ) -> None:
        aside = self.directory / f".tmp-{path.name}-{os.getpid()}"
        aside.mkdir()
        try:
            parts = serialise(materialize(state))
            write_synced(aside / STATE_FILE, parts)
            digest = hashlib.sha256()
            for part in parts:
                digest.update(part)
            manifest = {**manifest, "sha256": digest.hexdigest()}
            manifest["size"] = sum(memoryview(part).nbytes for part in parts)
            write_synced(aside / MANIFEST_FILE, json.dumps(manifest, indent=1).encode())
            fsync_directory(aside)
            if before_write is not None:
                before_write()
            os.rename(aside, path)
            fsync_directory(self.directory)
        except BaseException:
            shutil.rmtree(aside, ignore_errors=True)
            raise

    # Reading

    def checkpoints(self) -> list[CheckpointInfo]:
        """The checkpoints whose manifest reads, oldest first (contents not verified)."""
        found = []
        for entry in self.directory.iterdir():
            if not (NAME.fullmatch(entry.name) and entry.is_dir()):
                continue
            try:
                found.append(info_of(entry, read_manifest(entry)))
            except (DamagedCheckpoint, PickledCheckpoint):
                continue
        return sorted(found, key=lambda info: info.sequence)

    def load(self, path: str | Path) -> tuple[CheckpointInfo, dict[str, Any]]:
        """One checkpoint's info and state, verified against its checksum.

        Raises:
            DamagedCheckpoint: files missing, truncated, or not matching the checksum.
        """
        path = Path(path)
        manifest = read_manifest(path)
        try:
            file = path / STATE_FILE
            payload = bytearray(file.stat().st_size)  # writable: restored arrays may be too
            with open(file, "rb") as reading:
                reading.readinto(payload)
        except OSError as error:
            raise DamagedCheckpoint(f"{path.name}: {STATE_FILE} unreadable ({error})") from None
        if hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
            raise DamagedCheckpoint(f"{path.name}: {STATE_FILE} does not match its checksum")
        return info_of(path, manifest), deserialise(payload)

    def load_latest(self) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        """The newest checkpoint that verifies; a damaged newer one is warned about, by name.

        Returns None when the directory holds no checkpoint at all.
        """
        self._join()
        candidates = sorted(
            (e for e in self.directory.iterdir() if NAME.fullmatch(e.name) and e.is_dir()),
            key=lambda e: int(NAME.fullmatch(e.name).group(1)),  # type: ignore[union-attr]
            reverse=True,
        )
        damaged: list[str] = []
        for entry in candidates:
            try:
                loaded = self.load(entry)
            except DamagedCheckpoint as error:
                damaged.append(f"{error} (kept as {self._set_aside(entry).name})")
                continue
            if damaged:
                warnings.warn(
                    f"checkpoint {'; '.join(damaged)}: resuming from {entry.name}, the newest "
                    "intact one, instead",
                    stacklevel=2,
                )
            return loaded
        if damaged:
            raise DamagedCheckpoint(
                f"no intact checkpoint in {self.directory}: {'; '.join(damaged)}"
            )
        return None

    def _set_aside(self, entry: Path) -> Path:
        """Move a damaged checkpoint out of the way (kept for inspection, named so): the
        retention and the next save's name skip it."""
        aside = entry.with_name(f"damaged-{entry.name}")
        suffix = 1
        while aside.exists():
            suffix += 1
            aside = entry.with_name(f"damaged-{entry.name}-{suffix}")
        try:
            entry.rename(aside)
        except OSError:
            return entry  # a read-only directory: leave it; the sequence skips it anyway
        return aside

    def best(self) -> CheckpointInfo | None:
        """The kept checkpoint with the best `monitor` value (None without a monitor or one)."""
        self._join()
        ranked = self._ranked(self.checkpoints())
        return ranked[0] if ranked else None

    def _ranked(self, infos: list[CheckpointInfo]) -> list[CheckpointInfo]:
        """`infos` with a `monitor` value, best first (the earliest of equals first)."""
        ranked = [info for info in infos if info.monitor is not None]
        ranked.sort(key=lambda info: info.monitor, reverse=self.mode == "max")  # type: ignore[arg-type, return-value]
        return ranked

    # Retention

    def _retain(self) -> None:
        infos = self.checkpoints()
        keep = {info.sequence for info in infos[-self.keep_last :]}
        keep |= {info.sequence for info in infos if info.permanent}
        if self.keep_best:
            keep |= {info.sequence for info in self._ranked(infos)[: self.keep_best]}
        for info in infos:
            if info.sequence not in keep:
                shutil.rmtree(info.path, ignore_errors=True)
