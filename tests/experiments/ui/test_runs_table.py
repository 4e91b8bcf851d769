"""`harness runs` in a real terminal of 80 and 120 columns: whole cells, whole run ids, best
first; run ids by any unique prefix."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from experiments.cli import main
from tests.paths import ROOT
from tests.terminal import in_terminal
from tracking.mlflow.runs import MlflowRuns

# Five runs as `harness run` logs them: flattened params, epoch and step metrics.
RUNS = [
    ("adam", 0.001, 32, "[128, 64]", 0.2145678, 0.9361111),
    ("sgd", 0.05, 64, "[64]", 0.4012345, 0.8833333),
    ("adam", 0.0003, 128, "[128, 64]", 0.1023456, 0.9722222),
    ("rmsprop", 0.002, 32, "[256, 128, 64]", 0.3301234, 0.9027778),
    ("sgd", 0.1, 16, "[64]", None, None),  # failed before its first epoch
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    folder = tmp_path_factory.mktemp("table")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    runs = MlflowRuns(uri)
    experiment = runs.experiment_id("compare")
    ids = []
    for index, (optimizer, rate, batch, hidden, val_loss, val_accuracy) in enumerate(RUNS):
        run_id = runs.create_run(experiment, run_name=f"run-{optimizer}-{index}")
        params = {
            "model.name": "mlp",
            "model.params.hidden_units": hidden,
            "optimizer.name": optimizer,
            "optimizer.learning_rate": str(rate),
            "data.name": "digits",
            "data.batch_size": str(batch),
            "trainer.engine": "fit",
            "trainer.epochs": "10",
            "trainer.seed": "42",
            "loss.name": "sparse_categorical_crossentropy",
            "tracking.run_name": f"run-{optimizer}-{index}",
        }
        if optimizer == "sgd":
            params["optimizer.params.momentum"] = "0.9"
        runs.log_params(run_id, params)
        if val_loss is not None:
            for key, value in {
                "loss": val_loss * 0.8,
                "accuracy": val_accuracy + 0.01,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "epoch": 10.0,
                "epoch_time_s": 0.4123,
                "steps_per_sec": 412.3456,
                "learning_rate": rate,
                "step/batch_loss": 0.3,
            }.items():
                runs.log_metric(run_id, key, value, step=450)
        runs.set_status(run_id, "FINISHED" if val_loss is not None else "FAILED")
        ids.append(run_id)
    return uri, ids


@pytest.mark.parametrize("columns", [80, 120])
def test_the_runs_table_fits_the_terminal_best_first_with_whole_ids(
    store: tuple[str, list[str]], columns: int, tmp_path: Path
) -> None:
    uri, ids = store
    out = in_terminal(
        [sys.executable, "-m", "experiments.cli", "runs", "--tracking-uri", uri],
        columns=columns,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = out.rstrip("\n").splitlines()
    assert all(len(line) <= columns for line in lines), "\n" + out  # nothing wraps
    header, _rule, *rows = lines
    rows = rows[: len(RUNS)]
    names = header.split()
    assert names[0] == "run" and "status" in names, out
    assert names.index("val_loss") < names.index("val_accuracy")  # the main metric first
    # Best first by val_loss, the failed run (no metrics) last; the best row marked.
    order = [2, 0, 3, 1, 4]
    for row, index in zip(rows, order, strict=True):
        assert row.split()[0].lstrip("*") == ids[index][:8], out  # whole, copyable
    assert rows[0].startswith("*") and not any(r.startswith("*") for r in rows[1:])
    assert " 0.1023 " in rows[0] + " "  # 4 significant digits
    assert "* best by val_loss (lowest)" in out
    # Only what differs among the runs: the optimizer's name, not the data set or epochs.
    assert "trainer.epochs" not in out and "data.name" not in out
    assert "epoch_time_s" not in out and "step/batch_loss" not in out
    if columns == 80:
        assert "left out to fit the terminal:" in out and "(--wide shows them)" in out
    else:
        assert "learning_rate" in header and "batch_size" in header  # short names
        assert names[:4] == ["run", "name", "status", "val_loss"]
        assert "3e-04" in rows[0]  # a learning rate in scientific notation


def test_wide_csv_and_json_show_every_column_in_full(
    store: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, ids = store
    assert main(["runs", "--tracking-uri", uri, "--wide"]) == 0
    wide = capsys.readouterr().out
    assert "left out" not in wide and "epoch_time_s" in wide.splitlines()[0]
    assert main(["runs", "--tracking-uri", uri, "--json"]) == 0
    import json

    records = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in records] == [ids[i] for i in (2, 0, 3, 1, 4)]
    assert records[0]["val_loss"] == pytest.approx(0.1023456)
    assert records[-1]["val_loss"] is None


def test_sort_picks_another_column_and_a_wrong_one_is_one_line(
    store: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, ids = store
    assert main(["runs", "--tracking-uri", uri, "--sort", "val_accuracy", "--csv"]) == 0
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run_id"] for r in rows] == [ids[i] for i in (2, 0, 3, 1, 4)]  # highest first
    assert main(["runs", "--tracking-uri", uri, "--sort", "val_acc"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--sort 'val_acc': the table has no such column" in err and "val_accuracy" in err


def test_a_run_id_is_any_unique_prefix_and_an_ambiguous_one_lists_the_matches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from experiments.errors import UsageError
    from experiments.ui.run_ids import resolve_run_id

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = MlflowRuns(uri)
    experiment = runs.experiment_id("prefixes")
    seen: dict[str, str] = {}
    while True:  # until two ids share their first 4 digits (a few hundred runs)
        run_id = runs.create_run(experiment)
        if run_id[:4] in seen:
            break
        seen[run_id[:4]] = run_id
    other = seen[run_id[:4]]
    assert resolve_run_id(uri, run_id[:12]) == run_id
    assert resolve_run_id(uri, run_id.upper()[:10]) == run_id
    with pytest.raises(UsageError, match="ambiguous: 2 runs start with it") as ambiguous:
        resolve_run_id(uri, run_id[:4])
    assert run_id[:12] in str(ambiguous.value) and other[:12] in str(ambiguous.value)
    assert main(["resume", run_id[:4], "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is ambiguous" in err
    assert main(["resume", "ffff0000ffff", "--tracking-uri", uri]) == 2
    assert "no run at" in capsys.readouterr().err
    assert main(["resume", "not-an-id", "--tracking-uri", uri]) == 2
    assert "a run id is hex digits" in capsys.readouterr().err


def test_compare_shows_what_differs_side_by_side_with_the_best_marked(
    store: tuple[str, list[str]], capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from urllib.parse import unquote

    uri, ids = store
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["compare", ids[0][:8], ids[2][:10], ids[1], "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines[:-1]), out  # the link may be longer
    header = lines[0].split()
    assert header == [ids[0][:8], f"*{ids[2][:8]}", ids[1][:8]]  # the best by val_loss
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    assert rows["val_loss"] == ["0.2146", "0.1023", "0.4012"]  # the main metric first
    assert list(rows).index("val_loss") < list(rows).index("accuracy")
    assert rows["optimizer.name"] == ["adam", "adam", "sgd"]
    assert rows["optimizer.learning_rate"] == ["1e-03", "3e-04", "5e-02"]
    assert "trainer.epochs" not in rows  # the same in every run
    link = unquote(lines[-1].strip())
    assert "/#/compare-runs?runs=" in link
    assert all(run_id in link for run_id in (ids[0], ids[1], ids[2]))
    assert main(["compare", ids[0], "--tracking-uri", uri]) == 2
    assert "name at least two runs" in capsys.readouterr().err


def test_trials_of_a_study_are_ranked_by_the_study_metric(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = MlflowRuns(uri)
    experiment = runs.experiment_id("study")
    ids = []
    # Trial 0 has the lower val_loss, trial 1 the higher val_accuracy, the study's metric.
    for number, (val_loss, val_accuracy) in enumerate([(0.1, 0.90), (0.3, 0.95)]):
        tags = {
            "harness.study": "s",
            "harness.trial_number": str(number),
            "harness.search_metric": "val_accuracy",
            "harness.search_direction": "maximize",
        }
        run_id = runs.create_run(experiment, run_name=f"trial {number}", tags=tags)
        runs.log_params(run_id, {"optimizer.learning_rate": str(0.011712 + number * 3e-5)})
        runs.log_metric(run_id, "val_loss", val_loss, step=1)
        runs.log_metric(run_id, "val_accuracy", val_accuracy, step=1)
        runs.set_status(run_id, "FINISHED")
        ids.append(run_id)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["compare", ids[0], ids[1], "--tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [ids[0][:8], f"*{ids[1][:8]}"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    assert list(rows)[1] == "val_accuracy"  # the study's metric first, after the name
    assert rows["optimizer.learning_rate"] == ["1.171e-02", "1.174e-02"]  # close, told apart
    assert "* best by val_accuracy (highest)" in lines
