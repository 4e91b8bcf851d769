"""Delivering what journals hold: to a resumed run, or from runs a killed process left behind.

Each point goes once: a run's history is read first, and only the (key, step) pairs it lacks
are sent (a point delivered just before a kill, its mark not yet written, is not sent again).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tracking.mlflow.delivery.journal import MetricJournal, forget, left_behind, read
from tracking.mlflow.delivery.sender import MAX_METRICS_PER_BATCH, MetricPoint


def logged_steps(runs: Any, run_id: str, keys: Iterable[str]) -> set[tuple[str, int]]:
    """The (key, step) pairs run `run_id` holds for `keys`."""
    return {
        (key, int(point.step)) for key in set(keys) for point in runs.metric_history(run_id, key)
    }


def send_missing(
    runs: Any, run_id: str, points: list[MetricPoint], logged: set[tuple[str, int]]
) -> int:
    """Send the `points` whose (key, step) `logged` lacks, in batches MLflow accepts, each
    under the store's retries; `logged` then holds them too. The number sent."""
    from mlflow.entities import Metric

    missing = [point for point in points if (point[0], point[2]) not in logged]
    for start in range(0, len(missing), MAX_METRICS_PER_BATCH):
        batch = [
            Metric(key, value, timestamp, step)
            for key, value, step, timestamp in missing[start : start + MAX_METRICS_PER_BATCH]
        ]
        runs.retry(
            functools.partial(runs.client.log_batch, run_id, metrics=batch, synchronous=True)
        )
    logged.update((point[0], point[2]) for point in missing)
    return len(missing)


def open_journal(
    runs: Any, run_id: str, template: str | None, *, logged: set[tuple[str, int]] | None
) -> MetricJournal:
    """The run's journal at `template` (`{run_id}` filled in; None: in `journal_dir()`),
    created or reopened; what an earlier attempt left in it that the run lacks (`logged`:
    what it holds, when known) is sent first, once, with a warning saying how much."""
    path = None if template is None else Path(template.replace("{run_id}", run_id))
    journal = MetricJournal(path, run_id=run_id, tracking_uri=runs.tracking_uri)
    waiting = journal.undelivered
    if waiting:
        if logged is None:
            logged = logged_steps(runs, run_id, (point[0] for point in waiting))
        sent = send_missing(runs, run_id, waiting, logged)
        with contextlib.suppress(OSError):  # a full disk: the sender reports the journal
            journal.delivered(len(waiting))
        if sent:
            warnings.warn(
                f"MLflow run {run_id}: sent the {sent} metric points an earlier attempt could "
                f"not, from {journal.path}",
                stacklevel=3,
            )
    return journal


def deliver_journal(path: Path, *, runs: Any = None) -> int:
    """Send what the journal at `path` holds and its run lacks, then remove the journal; the
    number of points sent.

    Raises:
        Exception: the run's store is unreachable, missing or refuses (the journal stays).
    """
    from mlflow.exceptions import MlflowException

    from tracking.mlflow.runs import MlflowRuns
    from tracking.mlflow.store import check_server, open_client

    with open(path, "a") as handle:  # one process delivers a journal; the next finds it gone
        fcntl.flock(handle, fcntl.LOCK_EX)
        current = read(path) if path.is_file() else None
        if current is None:
            return 0
        if runs is None:
            check_server(current.tracking_uri, timeout_s=2.0)  # one short try, not a long wait
            uri = current.tracking_uri
            runs = MlflowRuns(uri, client=open_client(uri, create=False))
        points = current.undelivered
        try:
            logged = logged_steps(runs, current.run_id, (point[0] for point in points))
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            forget(path, current.run_id)  # the run was deleted: nothing to deliver to
            return 0
        sent = send_missing(runs, current.run_id, points, logged)
        forget(path, current.run_id)
    return sent


def deliver_left_behind() -> list[str]:
    """Deliver every journal a killed process left on this machine whose store answers now;
    a line for each that had points to send (journals whose store does not answer stay)."""
    lines = []
    for path, held in left_behind():
        try:
            sent = deliver_journal(path)
        except Exception:  # the store is down, the run deleted: kept for a later attempt
            continue
        if sent:
            lines.append(
                f"delivered {sent} metric points of run {held.run_id} that an earlier, "
                f"interrupted process had kept in {path}"
            )
    return lines
