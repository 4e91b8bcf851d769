"""Where runs go: URI precedence and validation; the CLI stays light to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from experiments.errors import UsageError
from experiments.tracking_setup import DEFAULT_TRACKING_URI, resolve_tracking_uri


@pytest.mark.parametrize(
    ("cli", "config", "env", "expected"),
    [
        ("http://cli:5000", "sqlite:///c.db", "sqlite:///e.db", "http://cli:5000"),
        (None, "sqlite:///c.db", "sqlite:///e.db", "sqlite:///c.db"),
        (None, None, "sqlite:///e.db", "sqlite:///e.db"),
        (None, None, None, DEFAULT_TRACKING_URI),
    ],
)
def test_tracking_uri_precedence(cli, config, env, expected, monkeypatch) -> None:
    if env is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", env)
    assert resolve_tracking_uri(cli, config) == expected


@pytest.mark.parametrize("uri", ["mlflow.db", "ftp://host/x", "http://:5000"])
def test_bad_tracking_uris_are_rejected(uri: str) -> None:
    with pytest.raises(UsageError, match=f"tracking URI '{uri}'"):
        resolve_tracking_uri(uri, None)


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = (
        "import sys, experiments.cli; "
        "heavy = [m for m in ('tensorflow', 'keras', 'mlflow', 'pandas') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
