"""`MlflowOptions`: how an `MlflowSink` talks to MLflow, declared once for all its doors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tracking.mlflow.retry import RetryPolicy

# About a tenth of what starting the writer process costs (a fresh interpreter importing
# MLflow): a run whose in-thread MLflow work reaches this in a few seconds will log far more,
# and a short run never pays for the process.
DEFAULT_SUBPROCESS_AFTER_CPU_S = 0.2


@dataclass(frozen=True)
class MlflowOptions:
    """Delivery settings of an `MlflowSink`; `MlflowSink(...)`, `start` and `resume` take
    them as keyword arguments, or as one `options=MlflowOptions(...)`.

    Args:
        max_retries, retry_backoff_s: every call to MLflow is retried this many times on a
            transient failure, waiting `retry_backoff_s`, then twice that, and so on.
        send_interval_s: how often the sender thread sends the queued metric points.
        metrics_in_subprocess: hand metric batches to a low-priority child process once
            MLflow's work on them has cost `subprocess_after_cpu_s` of CPU in the sender
            thread (0: from the start); False writes every batch in the sender thread.
        expected_metric_points: about how many points the run will log, when the caller
            knows: a run that would pass `subprocess_after_cpu_s` starts the child at once.
        writer_timeout_s: a child that takes longer for one batch (a locked store, a server
            that never answers) is killed and the batch retried.
        journal_path: where the run's metric points wait on disk until MLflow has them, `{run_id}`
            filled in (a harness run keeps it beside its checkpoints); None: in
            `tracking.mlflow.delivery.journal.journal_dir()`.

    Raises:
        ValueError: a value out of range; the message names the argument.
    """

    max_retries: int = 5
    retry_backoff_s: float = 0.5
    send_interval_s: float = 1.0
    metrics_in_subprocess: bool = True
    subprocess_after_cpu_s: float = DEFAULT_SUBPROCESS_AFTER_CPU_S
    expected_metric_points: int | None = None
    writer_timeout_s: float = 120.0
    journal_path: str | None = None

    def __post_init__(self) -> None:
        for name, low, strict in (
            ("max_retries", 0, False),
            ("retry_backoff_s", 0, False),
            ("send_interval_s", 0, True),
            ("subprocess_after_cpu_s", 0, False),
            ("writer_timeout_s", 0, True),
        ):
            value = getattr(self, name)
            if value < low or (strict and value == low):
                rule = f"> {low}" if strict else f">= {low}"
                raise ValueError(f"`{name}` must be {rule}. Received: {name}={value}")

    @classmethod
    def of(cls, options: MlflowOptions | None, settings: dict[str, Any]) -> MlflowOptions:
        """`options` (or the defaults) with the keyword `settings` replacing some of them.

        Raises:
            TypeError: a setting that is not an option; the message lists the options.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(
                f"MlflowSink got unexpected options {unknown}; its options are {sorted(names)}"
            )
        return dataclasses.replace(options or cls(), **settings)

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy every call of the sink goes through."""
        return RetryPolicy(max_retries=self.max_retries, backoff_s=self.retry_backoff_s)
