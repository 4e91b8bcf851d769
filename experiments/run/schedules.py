"""The learning-rate schedule and plateau of a config, in optimizer updates of this run."""

from __future__ import annotations

from typing import Any

from experiments.config.schema import ExperimentConfig
from experiments.errors import UsageError
from experiments.run.plan import RunPlan


def build_learning_rate(config: ExperimentConfig, plan: RunPlan) -> Any:
    """`optimizer.learning_rate`, or the schedule (wrapped for `plateau:`) built on it.

    With `data.lr_scaling: linear`, every rate (the base rate, a piecewise schedule's values,
    the end rate of a polynomial one) is scaled by `batch_size / reference_batch_size`, so
    a search over batch sizes keeps comparable rates; the logged rate is the scaled one.
    Epoch-based settings (`every_epochs`, and `decay_steps` defaulting to the whole run) are
    converted to optimizer updates (what schedules count, also under accumulation) with the
    plan's epoch length, which must be known.

    Raises:
        UsageError: the epoch length is unknown where it is needed, the warm-up is longer
            than the run, or a setting is rejected.
    """
    from harness.schedules import PlateauSchedule, build_schedule

    scale = config.data.lr_scale
    section, base = config.schedule, config.optimizer.learning_rate * scale
    if section is None and config.plateau is None:
        return base
    name = section.name if section is not None else "constant"
    settings = section.model_dump(exclude={"name"}, exclude_none=True) if section else {}
    for rates in ("values", "end_learning_rate"):
        if rates in settings:
            value = settings[rates]
            settings[rates] = [v * scale for v in value] if rates == "values" else value * scale
    warmup = int(settings.get("warmup_steps", 0))
    needs_length = "every_epochs" in settings or (
        name in ("cosine", "polynomial") and "decay_steps" not in settings
    )
    steps_per_epoch, total = plan.updates_per_epoch, plan.total_updates
    if needs_length and steps_per_epoch is None:
        raise UsageError(
            f"schedule {name}: the epoch length of data ({config.data.name}) is unknown, so "
            "epoch-based settings cannot be converted to steps. Set trainer.steps_per_epoch, "
            "or give the schedule in steps (schedule.decay_steps, schedule.every_steps)"
        )
    if total is not None and warmup >= total:
        raise UsageError(
            f"schedule.warmup_steps ({warmup}) must be shorter than the run ({total} optimizer "
            f"updates: {plan.epochs} epochs of {steps_per_epoch}). Lower "
            "schedule.warmup_steps or train longer"
        )
    if "every_epochs" in settings:
        settings["every_steps"] = settings.pop("every_epochs") * steps_per_epoch
    if needs_length and "decay_steps" not in settings and total is not None:
        settings["decay_steps"] = total - warmup
    try:
        schedule = build_schedule(name, base, **settings)
    except ValueError as error:
        raise UsageError(f"schedule: {error}") from None
    if config.plateau is not None:
        schedule = PlateauSchedule(schedule, min_lr=config.plateau.min_lr)
    return schedule


def build_plateau(config: ExperimentConfig, schedule: Any) -> Any | None:
    """The `PlateauReducer` of `plateau:`, acting on `schedule` (a `PlateauSchedule`)."""
    if config.plateau is None:
        return None
    from harness.callbacks.plateau import PlateauReducer

    # The schedule's own floor is min_lr; the reducer takes the rest of the section.
    return PlateauReducer(schedule, **config.plateau.model_dump(exclude={"min_lr"}))
