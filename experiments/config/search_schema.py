"""The `search:` section: what an Optuna study explores, how, and for how long.

Every searchable thing is a config path (`optimizer.learning_rate`, `model.params.dropout`),
mapped to a distribution:

    search:
      metric: val_accuracy
      direction: maximize
      n_trials: 20
      space:
        optimizer.name: {categorical: [adam, sgd]}
        optimizer.learning_rate: {float: [1.0e-4, 1.0e-1], log: true}
        optimizer.params.momentum: {float: [0.0, 0.95], when: {optimizer.name: sgd}}
        data.batch_size: {int: [16, 128], step: 16}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc", "grid", "nsga2")
PRUNERS = ("none", "median", "asha", "hyperband")
Direction = Literal["minimize", "maximize"]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, populate_by_name=True, allow_inf_nan=False
    )


class Param(_Strict):
    """One config path's distribution: exactly one of `float`, `int`, `categorical`."""

    float_: tuple[float, float] | None = Field(
        None, alias="float", description="[low, high]: a float between them"
    )
    int_: tuple[int, int] | None = Field(
        None, alias="int", description="[low, high]: an integer between them"
    )
    categorical: list[Any] | None = Field(None, description="the choices")
    log: bool = Field(False, description="sample on a log scale")
    step: float | None = Field(None, gt=0, description="the grid's step")
    when: dict[str, Any] = Field(
        default_factory=dict, description="suggested only when these paths have these values"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        kinds = [k for k in ("float", "int", "categorical") if self.bounds_or_choices(k)]
        if len(kinds) != 1:
            raise ValueError(
                "a distribution is exactly one of {float: [low, high]}, {int: [low, high]} or "
                f"{{categorical: [a, b, ...]}}; this one has {kinds or 'none'}"
            )
        low_high = self.float_ or self.int_
        if low_high is not None and low_high[0] > low_high[1]:
            raise ValueError(f"low must not exceed high; received [{low_high[0]}, {low_high[1]}]")
        if low_high is not None and self.log and low_high[0] <= 0:
            raise ValueError(f"a log distribution needs low > 0; received low={low_high[0]}")
        if self.categorical is not None and (self.log or self.step):
            raise ValueError("log and step apply to float and int distributions only")
        if self.categorical == []:
            raise ValueError("categorical needs at least one choice")
        if self.log and self.step:
            raise ValueError("a distribution cannot be both log and stepped: drop one")
        if self.int_ is not None and self.step is not None and self.step != int(self.step):
            raise ValueError(f"an int distribution's step is an integer; received {self.step}")
        return self

    def bounds_or_choices(self, kind: str) -> Any:
        return {"float": self.float_, "int": self.int_, "categorical": self.categorical}[kind]

    @property
    def kind(self) -> str:
        return next(k for k in ("float", "int", "categorical") if self.bounds_or_choices(k))


class PrunerSpec(_Strict):
    name: Literal["none", "median", "asha", "hyperband"] = Field(
        "none", description="none, median, asha or hyperband"
    )
    patience: int | None = Field(None, ge=0, description="epochs without improvement tolerated")
    params: dict[str, Any] = Field(default_factory=dict, description="the Optuna pruner's own")


class LauncherSpec(_Strict):
    """Where trial processes run: `local` (this machine's `--devices` slots) or `ray` (wherever
    a Ray cluster places them)."""

    name: Literal["local", "ray"] = Field("local", description="local or ray")
    address: str | None = Field(
        None,
        description="ray: the cluster, HOST:PORT or auto (default: RAY_ADDRESS, else a local "
        "Ray instance started for the search)",
    )
    gpus_per_trial: float | None = Field(
        None, ge=0, description="ray: GPUs per trial (default: 1 where the cluster has GPUs)"
    )
    cpus_per_trial: float | None = Field(
        None, ge=0, description="ray: CPUs per trial (default: 1 on a cluster without GPUs)"
    )
    max_concurrent: int | None = Field(
        None, ge=1, description="trials at once at most (default: as many as the cluster holds)"
    )
    shared_checkpoints: bool = Field(
        False,
        description="ray: checkpoint.dir is on a path every node shares (else checkpoints are "
        "mirrored to MLflow, and a retry on another node resumes from there)",
    )
    dashboard: bool = Field(False, description="ray: the local instance's dashboard")


class SearchSection(_Strict):
    """An Optuna study over this experiment; `harness search CONFIG` runs it."""

    metric: str | list[str] = Field("val_loss", description="an epoch-level key, or two")
    direction: Direction | list[Direction] = Field(
        "minimize", description="minimize or maximize (one per metric)"
    )
    n_trials: int | None = Field(None, ge=1, description="trials in all")
    timeout_minutes: float | None = Field(
        None, gt=0, description="stop starting trials after this long"
    )
    study: str | None = Field(None, description="default: the experiment's name")
    seed: int | None = Field(None, description="the sampler's seed")
    space: dict[str, Param] = Field(description="config path: its distribution")
    sampler: Literal["tpe", "random", "cmaes", "gp", "qmc", "grid", "nsga2"] = Field(
        "tpe", description="tpe, random, cmaes, gp, qmc, grid or nsga2"
    )
    sampler_params: dict[str, Any] = Field(
        default_factory=dict, description="the Optuna sampler's own arguments"
    )
    pruner: PrunerSpec = Field(
        default_factory=PrunerSpec,
        description="stops bad trials early: a name, or {name, patience, params}",
    )
    retries: int = Field(1, ge=0, description="retries of a trial whose process died")
    launcher: LauncherSpec = Field(
        default_factory=LauncherSpec,
        description="where trials run: local, ray, or {name: ray, address, gpus_per_trial, ...}",
    )
    register_as: str | None = Field(None, description="default: the study's name")
    heartbeat_s: int = Field(
        10, ge=1, description="how often a supervisor beats for its trials (PostgreSQL storage)"
    )
    grace_period_s: int = Field(
        60, ge=1, description="a running trial without a beat for this long is failed, retried"
    )

    @field_validator("pruner", "launcher", mode="before")
    @classmethod
    def _by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> SearchSection:
        if not self.space:
            raise ValueError(
                "search.space is empty: map at least one config path to a distribution, e.g. "
                "optimizer.learning_rate: {float: [1.0e-4, 1.0e-1], log: true}"
            )
        metrics = self.metrics
        directions = self.directions
        if len(metrics) != len(directions):
            raise ValueError(
                f"search.metric names {len(metrics)} metrics but search.direction gives "
                f"{len(directions)} directions: give one direction per metric"
            )
        if len(metrics) > 2:
            raise ValueError(f"search.metric takes one or two metrics; received {metrics}")
        if len(metrics) == 2 and self.sampler not in ("nsga2", "random", "tpe", "gp"):
            raise ValueError(
                f"search.sampler '{self.sampler}' cannot search two metrics: use nsga2"
            )
        if len(metrics) == 2 and self.pruner.name != "none":
            raise ValueError("Optuna cannot prune a two-metric study: set search.pruner: none")
        unstepped = [path for path, p in self.space.items() if p.kind == "float" and not p.step]
        if self.grace_period_s <= self.heartbeat_s:
            raise ValueError(
                f"search.grace_period_s ({self.grace_period_s}) must exceed search.heartbeat_s "
                f"({self.heartbeat_s}), or live trials are failed between two beats: e.g. "
                "heartbeat_s: 10, grace_period_s: 60"
            )
        if self.sampler == "grid" and unstepped:
            raise ValueError(
                f"search.sampler grid needs a finite space, and {unstepped} have no step: give "
                "every float a step, or use int and categorical distributions"
            )
        for path, param in self.space.items():
            for condition, wanted in param.when.items():
                if condition not in self.space:
                    raise ValueError(
                        f"search.space.{path}.when names '{condition}', which is not searched: "
                        "a condition must be a path in search.space"
                    )
                choices = self.space[condition].categorical
                wanted_values = set(map(str, wanted if isinstance(wanted, list) else [wanted]))
                if choices is not None and not wanted_values & set(map(str, choices)):
                    raise ValueError(
                        f"search.space.{path}.when: {condition} is never {wanted!r} (its "
                        f"choices are {choices}), so {path} would never be searched"
                    )
        return self

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def directions(self) -> list[str]:
        return [self.direction] if isinstance(self.direction, str) else list(self.direction)
