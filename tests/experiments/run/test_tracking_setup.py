"""Where runs go: URI precedence and validation; the CLI stays light to import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from experiments.errors import UsageError
from experiments.run.tracking_setup import DEFAULT_TRACKING_URI, resolve_tracking_uri


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


@pytest.mark.parametrize(
    ("changes", "batches", "expected"),
    [
        ({}, 8, (2 * 8 // 2) * 4),  # 2 epochs, every 2nd of 8 steps, loss + lr + norm + accuracy
        ({"trainer.log_every_n_steps": 1, "trainer.epochs": 30}, 45, 30 * 45 * 4),
        ({"trainer.steps_per_epoch": 5}, None, (2 * 5 // 2) * 4),  # steps count across epochs
        ({}, None, None),  # no length: the sink decides from what it writes
    ],
)
def test_a_run_estimates_the_metric_points_it_will_log(changes, batches, expected) -> None:
    from types import SimpleNamespace

    from experiments.config.schema import ExperimentConfig
    from experiments.run.tracking_setup import expected_metric_points
    from tests.experiments.configs import tiny_with

    config = ExperimentConfig.model_validate(tiny_with(changes))
    assert expected_metric_points(config, SimpleNamespace(num_batches=batches)) == expected
