"""The study's parent run describes the search and its best trial only (a real MLflow store)."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient

from experiments.config.search_schema import SearchSection
from experiments.search.parent import ParentRun
from experiments.search.study import RUN_ATTR
from tracking.mlflow.runs import MlflowRuns

SEARCH = SearchSection.model_validate(
    {
        "metric": "val_accuracy",
        "direction": "maximize",
        "n_trials": 3,
        "sampler": "random",
        "pruner": "median",
        "space": {
            "optimizer.name": {"categorical": ["adam", "sgd"]},
            "optimizer.learning_rate": {"float": [1.0e-4, 1.0e-1], "log": True},
            "optimizer.params.momentum": {"float": [0.0, 0.95], "when": {"optimizer.name": "sgd"}},
        },
    }
)
SGD = optuna.distributions.CategoricalDistribution(["adam", "sgd"])
RATE = optuna.distributions.FloatDistribution(1.0e-4, 1.0e-1, log=True)
MOMENTUM = optuna.distributions.FloatDistribution(0.0, 0.95)


def _trial(study: optuna.Study, runs: MlflowRuns, params: dict[str, object], value: float) -> None:
    """A finished trial with its own run holding its final epoch metrics."""
    run_id = runs.create_run(runs.experiment_id("parent-test"), run_name="trial")
    runs.log_metric(run_id, "val_accuracy", value, step=10)
    runs.log_metric(run_id, "val_loss", 1.0 - value, step=10)
    runs.log_metric(run_id, "system/cpu", 50.0, step=10)
    runs.set_status(run_id, "FINISHED")
    distributions = {"optimizer.name": SGD, "optimizer.learning_rate": RATE}
    if "optimizer.params.momentum" in params:
        distributions["optimizer.params.momentum"] = MOMENTUM
    study.add_trial(
        optuna.trial.create_trial(
            params=params,
            distributions=distributions,
            value=value,
            user_attrs={RUN_ATTR: run_id},
        )
    )


def test_the_parent_run_shows_the_search_settings_and_only_the_best_trial(
    mlflow_uri: str,
) -> None:
    runs = MlflowRuns(mlflow_uri)
    study = optuna.create_study(direction="maximize", study_name="parent-test")
    parent = ParentRun.open(
        runs, study, SEARCH, experiment="parent-test", storage="journal://x/journal.log"
    )
    client = MlflowClient(mlflow_uri)
    created = client.get_run(parent.run_id).data
    assert created.params["search.metric"] == "val_accuracy"
    assert created.params["search.direction"] == "maximize"
    assert created.params["search.sampler"] == "random"
    assert created.params["search.pruner"] == "median"
    assert created.params["search.n_trials"] == "3"
    assert created.params["space.optimizer.learning_rate"] == "float [0.0001, 0.1] log"
    assert created.params["space.optimizer.name"] == "categorical [adam, sgd]"
    assert created.tags["mlflow.user"] not in ("", "unknown")
    assert "No trial has finished yet" in created.tags["mlflow.note.content"]

    sgd = {
        "optimizer.name": "sgd",
        "optimizer.learning_rate": 0.01,
        "optimizer.params.momentum": 0.9,
    }
    _trial(study, runs, sgd, 0.8)
    parent.refresh(plots=False)
    tags = client.get_run(parent.run_id).data.tags
    assert tags["best.optimizer.params.momentum"] == "0.9"

    adam = {"optimizer.name": "adam", "optimizer.learning_rate": 0.002}
    _trial(study, runs, adam, 0.95)
    parent.refresh(plots=False)
    data = client.get_run(parent.run_id).data
    best = {k: v for k, v in data.tags.items() if k.startswith("best.")}
    assert best == {
        "best.optimizer.name": "adam",
        "best.optimizer.learning_rate": "0.002",
        "best.trial_number": "1",
        "best.run_id": study.trials[1].user_attrs[RUN_ATTR],
    }  # the SGD trial's momentum is gone
    # The best trial's final epoch metrics under their own names: the parent's row reads as it.
    assert data.metrics["val_accuracy"] == pytest.approx(0.95)
    assert data.metrics["val_loss"] == pytest.approx(0.05)
    assert "system/cpu" not in data.metrics
    assert data.metrics["best_val_accuracy"] == pytest.approx(0.95)
    note = data.tags["mlflow.note.content"]
    assert "Best of 2 finished trials: trial 1, val_accuracy 0.95" in note
    assert "optimizer.name=adam" in note


def test_the_plots_render_offline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from experiments.search.parent import write_plots

    study = optuna.create_study(direction="maximize")
    for value, rate in ((0.5, 0.01), (0.7, 0.02), (0.9, 0.003)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"optimizer.learning_rate": rate},
                distributions={"optimizer.learning_rate": RATE},
                value=value,
            )
        )
    written = write_plots(study, tmp_path)
    assert tmp_path / "optimization_history.html" in written
    html = (tmp_path / "optimization_history.html").read_text()
    import re

    assert not re.search(r"<script[^>]*\bsrc=", html)  # no script to download (a CDN's)
    assert len(html) > 1_000_000  # plotly.js itself is inside the file
