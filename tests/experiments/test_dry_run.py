"""`--dry-run` checks everything a run or a search would, and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.cli import main
from tests.experiments.configs import write_config
from tests.paths import ROOT


def test_a_dry_run_checks_the_run_and_creates_nothing(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(in_tmp, {"trainer.epochs": 3})
    before = sorted(in_tmp.iterdir())
    assert main(["run", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run: the config is valid and the run can start: model mlp (")
    assert "3 epochs of 8 batches" in out and "No run was created" in out
    assert sorted(in_tmp.iterdir()) == before  # no mlflow.db, no runs/, no checkpoints/
    # What only building the model and data finds: one line, exit 2, still nothing written.
    wrong = write_config(in_tmp, {"model.params.input_shape": [63]}, "wrong.yaml")
    assert main(["run", str(wrong), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: ") and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in in_tmp.iterdir()) == ["tiny.yaml", "wrong.yaml"]


def test_a_search_dry_run_creates_no_study_and_no_run(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = ROOT / "experiments" / "configs" / "digits_cnn_search.yaml"
    args = ["search", str(shipped), "--devices", "cpu:2", "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dry run: the search can start: 16 trials over 2 slot(s) (cpu0, cpu1)" in out
    assert list(in_tmp.iterdir()) == []  # no journal, no store
    assert main([*args, "search.space={}"]) == 2
    assert "search.space is empty" in capsys.readouterr().err
