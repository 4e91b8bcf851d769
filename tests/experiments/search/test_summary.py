"""What a search prints at its end: rounded values, short lines, commands that work as typed."""

from __future__ import annotations

from experiments.search.start import SearchResult
from experiments.search.summary import params_text, summary_lines
from experiments.ui.numbers import readable


def test_the_end_of_a_search_is_rounded_and_fits_80_columns() -> None:
    result = SearchResult(
        study="digits-search",
        storage="journal:///tmp/searches/digits-search/journal.log",
        parent_run_id="56cefff5b55840a8b27b9af8395fd9b9",
        counts={"complete": 7, "pruned": 9, "failed": 0},
        best={
            "number": 14,
            "values": [0.9888888597488403],
            "params": {
                "optimizer.name": "adam",
                "optimizer.learning_rate": 0.011739504933,
                "data.batch_size": 128,
                "optimizer.params.momentum": 0.00042328245586,
            },
            "run_id": "48b580e5d2a94b1c8e1f0a3b5c7d9e11",
        },
        metrics=("val_accuracy",),
        tracking_uri="sqlite:///mlflow.db",
        experiment_id="1",
    )
    lines = summary_lines(result)
    assert lines[0] == "study 'digits-search' done: 16 trials (7 complete, 9 pruned, 0 failed)"
    assert lines[1] == "  best:       trial 14, val_accuracy 0.9889 (run 48b580e5)"
    assert "              optimizer.learning_rate = 1.174e-02"  # a rate: scientific in lines
    assert "              optimizer.params.momentum = 4.233e-04" in lines  # small: scientific
    assert "0.98888" not in "\n".join(lines)  # no raw float anywhere
    links = [line for line in lines if "http://" in line or "harness " in line]
    assert any("runs --study digits-search --tracking-uri sqlite:///mlflow.db" in s for s in links)
    assert any("/#/experiments/1/runs/56cefff5b55840a8b27b9af8395fd9b9" in s for s in links)
    assert all(len(line) <= 80 for line in lines if line not in links), lines


def test_values_read_as_a_person_writes_them() -> None:
    assert readable(0.10000000149011612) == "0.1"
    assert readable(0.00021435095535798573) == "2.144e-04"
    assert readable(128) == "128" and readable("adam") == "adam" and readable(True) == "True"
    assert readable(None) == "" and readable(float("nan")) == "" and readable("nan") == "nan"
    # Learning rates: scientific, to 4 significant digits, so close ones stay apart.
    rates = [readable(v, "optimizer.learning_rate") for v in (0.011712, 0.011743, 3e-4, "0.05")]
    assert rates == ["1.171e-02", "1.174e-02", "3e-04", "5e-02"]
    assert params_text({"a.b": 0.123456, "c": "sgd"}) == "a.b=0.1235, c=sgd"
