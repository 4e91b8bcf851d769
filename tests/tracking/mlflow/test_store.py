"""Opening a local MLflow store: one process creates it, a half-migrated one is named, and a
store that is only read is never created."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tracking.mlflow.store import (
    BrokenStore,
    MissingStore,
    open_client,
    sqlite_path,
    store_lock,
)


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:///mlflow.db", Path("mlflow.db")),
        ("sqlite:////tmp/x/m.db", Path("/tmp/x/m.db")),
        ("http://127.0.0.1:5000", None),
        ("postgresql+psycopg://u@h/db", None),
    ],
)
def test_only_a_sqlite_uri_is_a_local_store(uri: str, path: Path | None) -> None:
    assert sqlite_path(uri) == path


def test_a_store_left_half_migrated_is_named_with_the_way_out(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:  # what an interrupted migration leaves behind
        connection.execute("CREATE TABLE _alembic_tmp_tags (x INTEGER)")
    with pytest.raises(BrokenStore, match="is half-migrated") as broken:
        open_client(f"sqlite:///{db}")
    assert f"mv {db} {db}.broken" in str(broken.value)
    assert "_alembic_tmp_tags already exists" in str(broken.value)


def test_a_store_that_is_only_read_is_not_created(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    with pytest.raises(MissingStore, match="there is no MLflow store at"):
        open_client(f"sqlite:///{db}", create=False)
    assert not db.exists()


def test_the_lock_keeps_a_second_process_out_until_the_first_is_done(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = (
        "import time; from tracking.mlflow.store import store_lock\n"
        f"with store_lock({uri!r}): print('in', time.monotonic(), flush=True)\n"
    )
    with store_lock(uri):
        other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        released = time.monotonic()
    out, _ = other.communicate(timeout=30)
    assert float(out.split()[1]) >= released  # it got in only after the lock was released
