"""A run's plan: its numbers from the config and the data, its rules checked once, and the
metric points it expects against the points a real run logs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from experiments.config.schema import ExperimentConfig
from experiments.run.plan import plan_run
from tests.experiments.configs import tiny_with

STEP_VALUES = ["grad_norm"]  # the gradient pipeline's, with on_nan: raise


@pytest.mark.parametrize(
    ("changes", "batches", "updates", "points"),
    [
        ({}, 8, 8, (2 * 8 // 2) * 4),  # 2 epochs, every 2nd of 8 updates: loss, acc, lr, norm
        ({"trainer.log_every_n_steps": 1, "trainer.epochs": 30}, 45, 45, 30 * 45 * 4),
        ({"trainer.steps_per_epoch": 5}, None, 5, (2 * 5 // 2) * 4),  # across epochs
        ({"trainer.accumulation_steps": 4}, 8, 2, (2 * 2 // 2) * 4),  # updates, not batches
        ({"trainer.accumulation_steps": 3}, 8, 3, (2 * 3 // 2) * 4),  # windows 3, 3 and 2
        ({"metrics": []}, 8, 8, (2 * 8 // 2) * 3),
        ({}, None, None, None),  # no length: the sink decides from what it writes
    ],
)
def test_the_plan_counts_updates_and_the_metric_points_they_log(
    changes: dict[str, Any], batches: int | None, updates: int | None, points: int | None
) -> None:
    config = ExperimentConfig.model_validate(tiny_with(changes))
    names = [str(m) for m in config.metrics]
    plan = plan_run(config, SimpleNamespace(num_batches=batches))
    plan = plan.with_step_metrics(names, STEP_VALUES)
    assert plan.updates_per_epoch == updates
    assert plan.total_updates == (None if updates is None else updates * config.trainer.epochs)
    assert plan.expected_metric_points == points


def test_an_epoch_that_accumulation_does_not_divide_is_planned_with_a_shorter_update() -> None:
    # Any data set, any k: the epoch's last update takes what is left (Lightning's rule).
    changes = {"trainer.accumulation_steps": 4, "trainer.steps_per_epoch": 6}
    config = ExperimentConfig.model_validate(tiny_with(changes))
    assert plan_run(config, SimpleNamespace(num_batches=None)).updates_per_epoch == 2
    config = ExperimentConfig.model_validate(tiny_with({"trainer.accumulation_steps": 3}))
    assert plan_run(config, SimpleNamespace(num_batches=8)).updates_per_epoch == 3


@pytest.mark.parametrize(
    "changes",
    [
        {"trainer.engine": "custom", "trainer.log_every_n_steps": 1},
        {"trainer.engine": "fit", "trainer.accumulation_steps": 2, "trainer.on_nan": "skip_step"},
        {"trainer.engine": "custom", "trainer.precision": "mixed_float16"},  # + loss_scale
    ],
    ids=["custom-every-step", "fit-accumulated-skip-step", "custom-loss-scaled"],
)
def test_a_real_run_logs_the_points_its_plan_expects(
    changes: dict[str, Any], mlflow_uri: str, in_tmp: Any
) -> None:
    from experiments.run.prepare import prepare
    from experiments.run.run import run_experiment

    config = ExperimentConfig.model_validate(
        tiny_with({**changes, "tracking.system_metrics_every_s": 0, "data.params.limit": 320})
    )
    plan = prepare(config).plan
    result = run_experiment(config, tracking_uri=mlflow_uri)

    client = MlflowClient(mlflow_uri)
    logged = {
        key: len(client.get_metric_history(result.run_id, key))
        for key in client.get_run(result.run_id).data.metrics
        if key.startswith("step/")
    }
    assert sorted(logged) == sorted(plan.step_metric_names)
    assert sum(logged.values()) == plan.expected_metric_points


@pytest.mark.parametrize(
    ("schedule", "decay_steps"),
    [
        ({"name": "cosine", "warmup_steps": 2}, 6 - 2),  # to alpha at the run's last update
        ({"name": "step", "every_epochs": 1, "factor": 0.5}, 2),  # every epoch: two updates
    ],
)
def test_a_schedule_s_epoch_settings_count_optimizer_updates_under_accumulation(
    schedule: dict[str, Any], decay_steps: int
) -> None:
    from experiments.run.schedules import build_learning_rate

    changes = {"trainer.accumulation_steps": 4, "trainer.epochs": 3, "schedule": schedule}
    config = ExperimentConfig.model_validate(tiny_with(changes))
    plan = plan_run(config, SimpleNamespace(num_batches=8))
    assert plan.total_updates == 6  # 3 epochs of 8 batches, 4 per update
    built = build_learning_rate(config, plan)
    inner = getattr(built, "schedule", built)  # inside the warm-up
    assert inner.decay_steps == decay_steps
