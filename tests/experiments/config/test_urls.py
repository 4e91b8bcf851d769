"""Storage and tracking URLs: no password in what is logged, the PostgreSQL driver named."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.config.schema import ExperimentConfig, flatten
from experiments.config.urls import postgres_driver_problem, redact, redact_all
from tests.experiments.configs import TINY, write_config


def test_passwords_are_redacted_from_urls_and_config_params() -> None:
    assert (
        redact("postgresql+psycopg://me:s3cr:et@db:5432/x")
        == "postgresql+psycopg://me:***@db:5432/x"
    )
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"  # a port is no password
    assert redact_all({"a": ["http://u:p@h"], "b": 3}) == {"a": ["http://u:***@h"], "b": 3}
    raw = copy.deepcopy(TINY)
    raw["tracking"]["uri"] = "postgresql+psycopg://me:hunter2@db/mlflow"
    params = flatten(ExperimentConfig.model_validate(raw))
    assert params["tracking.uri"] == "postgresql+psycopg://me:***@db/mlflow"
    assert "hunter2" not in str(params)


def test_a_missing_postgresql_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    assert postgres_driver_problem("postgresql+psycopg://u@h/db", "--storage") is None
    assert postgres_driver_problem("sqlite:///x.db", "--storage") is None
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if "psycopg" in name else real(name)
    )
    problem = postgres_driver_problem("postgresql://u:pw@h/db", "tracking URI")
    assert problem == (
        "tracking URI postgresql://u:***@h/db: the PostgreSQL driver (psycopg2) is not "
        "installed. Install the extra: pip install -e '.[postgres]' (psycopg 3), and write "
        "postgresql+psycopg://u:***@h/db"
    )


def test_a_postgresql_tracking_uri_without_its_driver_is_one_line_exit_2(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(in_tmp, {}, "run.yaml")
    uri = "postgresql://postgres:secret@127.0.0.1:5432/test"
    assert main(["run", str(config), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "harness: error: tracking URI postgresql://postgres:***@127.0.0.1:5432/test: SQLAlchemy "
        "opens it with the psycopg2 driver, which is not installed; the installed driver is "
        "psycopg 3: write postgresql+psycopg://postgres:***@127.0.0.1:5432/test"
    )
    assert not list(in_tmp.glob("*.db"))  # nothing half-written
