"""Opening an MLflow store: a local SQLite store is created or migrated by one process at a time.

MLflow creates a SQLite store's tables (or upgrades them) the first time a process opens it.
Several processes opening a new store at once — runs started together, a search's trials —
each start the migration, and the losers leave it half-migrated for good ("table
_alembic_tmp_tags already exists"). Every process of ours opens a local store under an OS file
lock beside the database (`mlflow.db.lock`), held only while MLflow opens it; a store an
older crash left half-migrated is recognised and named, with the way out.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# What SQLite says when MLflow's migrations find the remains of an interrupted one.
_HALF_MIGRATED = ("_alembic_tmp_", "duplicate column name", "Online migration expected")


class BrokenStore(RuntimeError):
    """A local store an interrupted migration left half-done; the message says what to do."""


class MissingStore(FileNotFoundError):
    """A local store that does not exist (and was not to be created)."""


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///...` tracking URI; None for any other store."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme.split("+")[0] != "sqlite" or tracking_uri.endswith(":memory:"):
        return None
    return Path(tracking_uri.split("://", 1)[1][1:] or ".")  # sqlite:///rel or sqlite:////abs


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Inside the block, no other process of ours opens the same local SQLite store (a
    no-op for any other store: a server or a database serializes its own schema)."""
    path = sqlite_path(tracking_uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(tracking_uri: str, *, create: bool = True) -> Any:
    """An `MlflowClient` for `tracking_uri`, its store created or upgraded by one process at
    a time.

    Raises:
        MissingStore: `create` is False and the local store does not exist.
        BrokenStore: the local store is half-migrated; the message says how to recover.
    """
    from mlflow.tracking import MlflowClient

    path = sqlite_path(tracking_uri)
    if path is not None and not create and not path.is_file():
        raise MissingStore(f"there is no MLflow store at '{tracking_uri}' ({path} does not exist)")
    # Its "Creating initial MLflow database tables..." lines would land in the user's terminal.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    with store_lock(tracking_uri):
        try:
            return MlflowClient(tracking_uri)
        except Exception as error:
            if path is None or not any(words in str(error) for words in _HALF_MIGRATED):
                raise
            raise BrokenStore(
                f"the MLflow store {path} is half-migrated: a process creating or upgrading it "
                f"was interrupted ({_first_line(error)}). Move it aside (mv {path} "
                f"{path}.broken) and run again for a new store; the old runs stay in that file"
            ) from None


def _first_line(error: BaseException) -> str:
    line = (str(error).strip().splitlines() or [repr(error)])[0]
    return line if len(line) <= 160 else line[:160] + "…"


class UnreachableServer(ConnectionError):
    """No MLflow server answers at a tracking URI."""


def check_server(tracking_uri: str, *, timeout_s: float = 5.0) -> None:
    """For an `http(s)://` tracking URI, one quick request: a server that refuses connections
    or does not exist is reported at once (MLflow's client retries such a request for many
    seconds). Any answer, an error page included, is a server that is there.

    Raises:
        UnreachableServer: nothing answers; the message says why in a few words.
    """
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return
    import requests

    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
    except requests.exceptions.Timeout:
        raise UnreachableServer(f"the server did not answer within {timeout_s:g} s") from None
    except requests.exceptions.ConnectionError as error:
        text = str(error)
        reason = next(
            (said for words, said in _CONNECTION_FAILURES if words in text), _first_line(error)
        )
        raise UnreachableServer(f"no MLflow server answers there ({reason})") from None


_CONNECTION_FAILURES = (
    ("Connection refused", "connection refused"),
    ("Name or service not known", "unknown host"),
    ("nodename nor servname", "unknown host"),
    ("Temporary failure in name resolution", "unknown host"),
    ("No route to host", "no route to host"),
)
