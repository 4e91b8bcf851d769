"""Storage and tracking URLs: passwords kept out of logs, and the PostgreSQL driver checked
before a URL is used (so a missing driver is one line naming the extra to install)."""

from __future__ import annotations

import importlib.util
import re
from typing import Any
from urllib.parse import urlparse

_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]*@")


def redact(url: str) -> str:
    """`url` with any password replaced by `***` (never log a storage or tracking password)."""
    return _PASSWORD.sub(r"\1***@", url)


def redact_all(value: Any) -> Any:
    """`value` (a config mapping) with a password in any URL string inside it redacted."""
    if isinstance(value, dict):
        return {key: redact_all(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_all(item) for item in value]
    return redact(value) if isinstance(value, str) and "://" in value else value


def postgres_driver_problem(url: str, what: str) -> str | None:
    """Why `url` cannot be opened for want of its PostgreSQL driver (`what` names the flag
    or key), or None. SQLAlchemy reads `postgresql://` as the psycopg2 driver and
    `postgresql+DRIVER://` as DRIVER; the `postgres` extra installs psycopg 3."""
    scheme = urlparse(url).scheme
    if scheme.split("+")[0] != "postgresql":
        return None
    driver = scheme.partition("+")[2] or "psycopg2"
    if importlib.util.find_spec(driver) is not None:
        return None
    fixed = "postgresql+psycopg://" + url.partition("://")[2]
    if importlib.util.find_spec("psycopg") is not None:
        return (
            f"{what} {redact(url)}: SQLAlchemy opens it with the {driver} driver, which is not "
            f"installed; the installed driver is psycopg 3: write {redact(fixed)}"
        )
    return (
        f"{what} {redact(url)}: the PostgreSQL driver ({driver}) is not installed. Install "
        f"the extra: pip install -e '.[postgres]' (psycopg 3), and write {redact(fixed)}"
    )
