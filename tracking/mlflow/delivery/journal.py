"""`MetricJournal`: a run's metric points on local disk until MLflow has them.

Every point the sender thread takes is appended here before it is sent, the file is fsynced
at every flush (and before a checkpoint is put in place), and what MLflow accepted is marked
off; so a killed process loses no point it logged, whatever the server did meanwhile. A
resumed run, or the next harness command on the machine, delivers what a journal still holds
and the run lacks, once. The file is compacted as points are delivered, and removed when all
are.

One file per run: a header line (the run, its tracking URI, the process writing it), then a
JSON line per point `[key, value, step, timestamp]` and, as chunks are delivered, marks
`{"delivered": n}` (points of the file delivered, from its first). A line cut short by a kill
is ignored. Journals not beside their run's checkpoints live in `journal_dir()`, which also
holds a link to every journal elsewhere, so any later command finds them all.

    python -m tracking.mlflow.delivery.journal [JOURNAL ...]   # deliver by hand
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tracking.mlflow.delivery.sender import MetricPoint
from tracking.owner import gone, owner

JOURNAL_NAME = "metrics.journal"  # beside a run's checkpoints
COMPACT_AFTER = 20_000  # delivered points before the file is rewritten without them


def journal_dir() -> Path:
    """Where this user's journals (and links to those elsewhere) are kept on this machine."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "keras-harness" / "journals"


class MetricJournal:
    """The journal of run `run_id` at `path` (created, or reopened with what it holds).

    Args:
        path: the file; None: `journal_dir()/<run_id>.journal`.
        run_id, tracking_uri: the run its points belong to.
    """

    def __init__(self, path: Path | None, *, run_id: str, tracking_uri: str) -> None:
        self.path = Path(path) if path is not None else journal_dir() / f"{run_id}.journal"
        self.run_id, self.tracking_uri = run_id, tracking_uri
        held = read(self.path) if self.path.is_file() else None
        self._waiting: list[MetricPoint] = [] if held is None else held.undelivered
        self._points = self._done = 0
        self._file: IO[str] | None = None
        self._failed: OSError | None = None
        try:
            self._rewrite(self._waiting, done=0)
            self._register()
        except OSError as error:  # a full disk: the first append reports it (and is dropped)
            self._failed = error

    @property
    def _out(self) -> IO[str]:
        if self._file is None:
            raise self._failed or OSError("the journal is closed")
        return self._file

    @property
    def undelivered(self) -> list[MetricPoint]:
        """The points an earlier attempt journaled and MLflow never confirmed (at opening)."""
        return list(self._waiting)

    @property
    def pending(self) -> int:
        """Points journaled and not yet delivered."""
        return self._points - self._done

    def append(self, points: list[MetricPoint]) -> None:
        """Journal points about to be sent (buffered: `sync` makes them durable)."""
        if points:
            self._out.write("".join(json.dumps(point) + "\n" for point in points))
            self._points += len(points)

    def sync(self) -> None:
        """Everything appended is on disk (fsynced)."""
        self._out.flush()
        os.fsync(self._out.fileno())

    def delivered(self, count: int) -> None:
        """The next `count` points (in journal order) are MLflow's now, or were refused."""
        self._done += count
        self._out.write(json.dumps({"delivered": self._done}) + "\n")
        if self._done >= COMPACT_AFTER and self._done * 2 >= self._points:
            self.sync()
            kept = read(self.path)
            self._rewrite([] if kept is None else kept.undelivered, done=0)

    def close(self) -> None:
        """Remove the journal when all its points are delivered; else keep it, synced (as
        far as the disk lets it: a journal that failed to write was reported already)."""
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._close()

    def _close(self) -> None:
        if self.pending == 0:
            self._out.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._unregister()
        else:
            self.sync()
            self._out.close()

    def _rewrite(self, points: list[MetricPoint], *, done: int) -> None:
        """The file anew (atomically): the header, `points`, none delivered yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        aside = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        header = {"journal": 1, "run_id": self.run_id, "tracking_uri": self.tracking_uri}
        try:
            with open(aside, "w", encoding="utf-8") as file:
                file.write(json.dumps({**header, "owner": owner()}) + "\n")
                file.write("".join(json.dumps(point) + "\n" for point in points))
                file.flush()
                os.fsync(file.fileno())
            os.replace(aside, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                aside.unlink()
            raise
        if self._file is not None:
            self._file.close()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        self._points, self._done = len(points), done

    def _register(self) -> None:
        """A link in `journal_dir()` to a journal kept elsewhere (beside checkpoints)."""
        link = journal_dir() / f"{self.run_id}.journal"
        if link.absolute() == self.path.absolute():
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(self.path.absolute())

    def _unregister(self) -> None:
        link = journal_dir() / f"{self.run_id}.journal"
        if link.is_symlink():
            link.unlink()


class Held:
    """What a journal file holds: its run, and the points not marked delivered."""

    def __init__(self, header: dict[str, Any], undelivered: list[MetricPoint]) -> None:
        self.run_id: str = header["run_id"]
        self.tracking_uri: str = header["tracking_uri"]
        self.owner: str | None = header.get("owner")
        self.undelivered = undelivered


def read(path: Path) -> Held | None:
    """The journal at `path`; None if it is not one (a header that does not read)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or header.get("journal") != 1:
        return None
    points: list[MetricPoint] = []
    done = 0
    for line in lines[1:]:
        try:
            item = json.loads(line)
        except ValueError:
            continue  # cut short by a kill mid-write
        if isinstance(item, dict):
            done = max(done, int(item.get("delivered", 0)))
        elif isinstance(item, list) and len(item) == 4:
            points.append((str(item[0]), float(item[1]), int(item[2]), int(item[3])))
    return Held(header, points[done:])


def left_behind() -> Iterator[tuple[Path, Held]]:
    """Journals on this machine still holding points, of runs no live process writes: what
    a killed run left for the next command to deliver."""
    folder = journal_dir()
    if not folder.is_dir():
        return
    for entry in sorted(folder.glob("*.journal")):
        target = entry.resolve() if entry.is_symlink() else entry
        held = read(target) if target.is_file() else None
        if held is None:
            if entry.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()  # its journal is gone (delivered, or moved away)
            continue
        if held.owner is None or gone(held.owner):
            yield target, held


def forget(path: Path, run_id: str) -> None:
    """Remove a fully delivered journal and its link."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    link = journal_dir() / f"{run_id}.journal"
    if link.is_symlink():
        link.unlink()


def main(argv: list[str]) -> int:
    """Deliver journals by hand (default: every one left behind on this machine)."""
    from tracking.mlflow.delivery.replay import deliver_journal

    paths = [Path(arg) for arg in argv] or [path for path, _ in left_behind()]
    for path in paths:
        held = read(path)
        if held is None:
            print(f"{path}: not a metrics journal", file=sys.stderr)
            return 2
        sent = deliver_journal(path)
        print(f"{path}: {sent} metric points delivered to run {held.run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
