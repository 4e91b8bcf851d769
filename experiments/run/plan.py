"""`RunPlan`: the numbers a run's config and data imply, computed once where it is prepared.

Steps per epoch, optimizer updates per epoch and in all, and the metric points the run will
log come from here; the schedule (epoch-based settings in updates), the MLflow sink (whether
its writer process starts at once) and the run's checks read them instead of recomputing.
The rules that tie the config to the data's length are checked here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from experiments.config.schema import ExperimentConfig
from experiments.errors import UsageError


@dataclass(frozen=True)
class RunPlan:
    """What one run will do, in numbers.

    Attributes:
        epochs: epochs in all (a resumed run's already trained included).
        batches_per_epoch: `trainer.steps_per_epoch`, else the training data's batches;
            None for data of unknown length.
        accumulation_steps: micro-batches per optimizer update.
        log_every_n_steps: optimizer updates between logged steps.
        step_metric_names: what each logged step logs (`step/batch_loss`, ...).
    """

    epochs: int
    batches_per_epoch: int | None
    accumulation_steps: int
    log_every_n_steps: int
    step_metric_names: tuple[str, ...] = ()

    def with_step_metrics(self, metric_names: Sequence[str], step_values: Sequence[str]) -> RunPlan:
        """The plan with what each logged step logs: the batch's loss and `metric_names`
        (the compiled metrics, as the logs key them), the rate, and `step_values` (the
        gradient pipeline's: `grad_norm`, ...)."""
        from harness.callbacks import MetricsLogger

        names = MetricsLogger.step_metric_names(["loss", *metric_names], step_values)
        return dataclasses.replace(self, step_metric_names=tuple(names))

    @property
    def updates_per_epoch(self) -> int | None:
        """Optimizer updates per epoch: what schedules, EMA and `step/*` count."""
        if self.batches_per_epoch is None:
            return None
        return -(-self.batches_per_epoch // self.accumulation_steps)  # a last, shorter window

    @property
    def total_updates(self) -> int | None:
        updates = self.updates_per_epoch
        return None if updates is None else updates * self.epochs

    @property
    def expected_metric_points(self) -> int | None:
        """The per-step metric points the run will log (vector metrics count as one); None
        when the data has no length."""
        total = self.total_updates
        if total is None:
            return None
        return total // self.log_every_n_steps * len(self.step_metric_names)


def plan_run(config: ExperimentConfig, train: Any) -> RunPlan:
    """The plan of `config` on its training data `train` (a `harness.data` source); its step
    metrics are added once the model is compiled (`RunPlan.with_step_metrics`).

    Raises:
        UsageError: a generator without `trainer.steps_per_epoch` (no epoch length).
    """
    from harness.data import GeneratorSource

    trainer = config.trainer
    if isinstance(train, GeneratorSource) and not trainer.steps_per_epoch:
        raise UsageError(
            f"data ({config.data.name}) is a generator, which has no length: set "
            "trainer.steps_per_epoch (e.g. trainer.steps_per_epoch=100)"
        )
    batches = trainer.steps_per_epoch or getattr(train, "num_batches", None)
    return RunPlan(
        epochs=trainer.epochs,
        batches_per_epoch=batches,
        accumulation_steps=trainer.accumulation_steps,
        log_every_n_steps=trainer.log_every_n_steps,
    )
