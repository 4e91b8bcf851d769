"""The metrics journal on a real disk: what a kill leaves behind, compaction, and delivery
to a real store, once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tracking.mlflow.delivery import journal as journal_module
from tracking.mlflow.delivery.journal import MetricJournal, journal_dir, left_behind, read
from tracking.mlflow.delivery.replay import deliver_left_behind

POINTS = [("loss", 1.0 / (step + 1), step, 1000 + step) for step in range(10)]


@pytest.fixture(autouse=True)
def own_journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Journals other tests' killed runs left stay out of these tests' sight."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_a_killed_writer_leaves_exactly_the_undelivered_points(tmp_path: Path) -> None:
    path = tmp_path / "metrics.journal"
    journal = MetricJournal(path, run_id="r1", tracking_uri="sqlite:///x.db")
    journal.append(POINTS[:6])
    journal.delivered(4)
    journal.append(POINTS[6:])
    journal.sync()
    with open(path, "a") as file:  # a line cut short by the kill
        file.write('["loss", 0.5, 11,')
    held = read(path)  # (no close: the process died)
    assert held is not None and held.run_id == "r1" and held.tracking_uri == "sqlite:///x.db"
    assert held.undelivered == POINTS[4:]
    reopened = MetricJournal(path, run_id="r1", tracking_uri="sqlite:///x.db")
    assert reopened.undelivered == POINTS[4:]  # waiting for the resumed run to deliver
    reopened.delivered(len(POINTS[4:]))
    reopened.close()
    assert not path.exists()  # all delivered: removed, its link too
    assert not (journal_dir() / "r1.journal").exists()


def test_delivered_points_are_compacted_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COMPACT_AFTER", 50)
    path = tmp_path / "metrics.journal"
    journal = MetricJournal(path, run_id="r2", tracking_uri="sqlite:///x.db")
    for start in range(0, 1000, 10):
        journal.append([("loss", float(s), s, s) for s in range(start, start + 10)])
        journal.delivered(10)
        assert len(path.read_text().splitlines()) < 2 * 50 + 10  # bounded
    journal.append([("loss", 5.0, 1000, 1000)])
    journal.sync()
    assert read(path).undelivered == [("loss", 5.0, 1000, 1000)]  # type: ignore[union-attr]
    journal.close()
    assert path.exists()  # one point still waits


def test_only_journals_of_processes_that_are_gone_are_left_behind(tmp_path: Path) -> None:
    alive = MetricJournal(tmp_path / "alive.journal", run_id="alive", tracking_uri="x")
    alive.append(POINTS)
    alive.sync()
    gone = tmp_path / "gone.journal"
    code = (
        "from tracking.mlflow.delivery.journal import MetricJournal\n"
        f"j = MetricJournal(__import__('pathlib').Path({str(gone)!r}), run_id='gone', "
        "tracking_uri='x')\n"
        f"j.append({POINTS!r}); j.sync()\n"  # and exits without closing: like a kill
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    found = {held.run_id: path for path, held in left_behind()}
    assert found == {"gone": gone}
    alive.delivered(len(POINTS))
    alive.close()


def test_the_next_command_delivers_what_a_killed_run_journaled_once(
    mlflow_uri: str, experiment_name: str, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_uri)
    run_id = client.create_run(client.create_experiment(experiment_name)).info.run_id
    client.log_metric(run_id, "loss", POINTS[0][1], step=0)  # delivered before the kill
    path = tmp_path / run_id / "metrics.journal"
    code = (
        "from pathlib import Path\n"
        "from tracking.mlflow.delivery.journal import MetricJournal\n"
        f"j = MetricJournal(Path({str(path)!r}), run_id={run_id!r}, "
        f"tracking_uri={mlflow_uri!r})\n"
        f"j.append({POINTS!r}); j.sync()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert deliver_left_behind() == [
        f"delivered 9 metric points of run {run_id} that an earlier, interrupted process had "
        f"kept in {path}"
    ]
    history = client.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(p[2], p[1]) for p in POINTS]
    assert not path.exists() and deliver_left_behind() == []  # once


def test_a_journal_header_says_which_run_and_store(tmp_path: Path) -> None:
    path = tmp_path / "metrics.journal"
    MetricJournal(path, run_id="r3", tracking_uri="http://h:5000").close()
    assert not path.exists()
    MetricJournal(path, run_id="r3", tracking_uri="http://h:5000").append(POINTS[:1])
    header = json.loads(path.read_text().splitlines()[0])
    assert header["journal"] == 1 and header["run_id"] == "r3"
    assert header["tracking_uri"] == "http://h:5000" and header["owner"].count(":") >= 2
