"""`MlflowRuns`: experiments and runs in one MLflow store, every call through one retry policy.

Everything outside a run's own metric stream goes through here: finding or creating an
experiment (also when another process creates it at the same moment), creating, reading,
tagging, ending and deleting runs, their artifacts, and registering a logged model. Only
`MlflowClient` calls with explicit ids are used, never MLflow's fluent "active run".

Example:
    >>> runs = MlflowRuns("sqlite:///mlflow.db", retry=RetryPolicy(max_retries=2))
    >>> run_id = runs.create_run(runs.experiment_id("digits"), run_name="search digits")
    >>> runs.set_status(run_id, "FINISHED")
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.tracking import MlflowClient

from tracking.mlflow.retry import RetryPolicy
from tracking.mlflow.store import open_client

# MLflow's limits (mlflow.utils.validation): params and tags per log_batch request, a param's
# and a tag's value.
MAX_TAGS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000


class RunNotFound(MlflowException, LookupError):
    """The store has no run with this id (an `MlflowException`, as MLflow raises it)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=RESOURCE_DOES_NOT_EXIST)


class MlflowRuns:
    """The experiments and runs of the store at `tracking_uri`.

    Args:
        tracking_uri: an MLflow tracking URI (`sqlite:///mlflow.db`, `http://HOST:5000`, ...).
        retry: how each call is retried on a transient failure (default `RetryPolicy()`).
        client: an `MlflowClient` to use instead of a new one for `tracking_uri`.

    Raises:
        BrokenStore: a local store an interrupted migration left half-done.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        retry: RetryPolicy | None = None,
        client: MlflowClient | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.retry = retry or RetryPolicy()
        self.client = client or open_client(tracking_uri)

    def with_retry(self, retry: RetryPolicy) -> MlflowRuns:
        """The same store and client under another retry policy."""
        return MlflowRuns(self.tracking_uri, retry=retry, client=self.client)

    # Experiments

    def experiment_id(self, name: str, *, artifact_location: str | None = None) -> str:
        """The id of experiment `name`, created (with `artifact_location`) if missing.

        Raises:
            ValueError: the experiment is deleted; the message says how to restore it.
        """
        return self.retry(lambda: self._get_or_create(name, artifact_location))

    def _get_or_create(self, name: str, artifact_location: str | None) -> str:
        client = self.client
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return str(client.create_experiment(name, artifact_location=artifact_location))
            except MlflowException as exc:
                # Another process created it between our lookup and create: use theirs.
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)
                if experiment is None:  # deleted for good in between: report the conflict
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {name!r} is deleted. Restore it (`mlflow experiments "
                f"restore --experiment-id {experiment.experiment_id}`) or choose another name."
            )
        return str(experiment.experiment_id)

    def find_experiment(self, name: str) -> Any | None:
        """The experiment named `name`, or None."""
        return self.retry(lambda: self.client.get_experiment_by_name(name))

    def get_experiment(self, experiment_id: str) -> Any:
        return self.retry(lambda: self.client.get_experiment(experiment_id))

    def experiments(self, *, newest_first: bool = False) -> list[Any]:
        """The store's active experiments."""
        order = ["creation_time DESC"] if newest_first else None
        return list(self.retry(lambda: self.client.search_experiments(order_by=order)))

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.retry(lambda: self.client.set_experiment_tag(experiment_id, key, value))

    # Runs

    def create_run(
        self,
        experiment_id: str,
        *,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """A new RUNNING run; its id."""
        run = self.retry(
            lambda: self.client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
        )
        return str(run.info.run_id)

    def get_run(self, run_id: str) -> Any:
        """The run `run_id` (info, data, inputs).

        Raises:
            RunNotFound: the store has no such run.
        """
        try:
            return self.retry(lambda: self.client.get_run(run_id))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise RunNotFound(f"no run '{run_id}' at '{self.tracking_uri}'") from None
            raise

    def search_runs(
        self,
        experiment_ids: Iterable[str],
        *,
        filter_string: str = "",
        max_results: int = 1000,
        newest_first: bool = False,
    ) -> list[Any]:
        ids = list(experiment_ids)
        if not ids:
            return []
        order = ["attributes.start_time DESC"] if newest_first else None
        return list(
            self.retry(
                lambda: self.client.search_runs(
                    ids, filter_string=filter_string, max_results=max_results, order_by=order
                )
            )
        )

    def child_runs(self, parent: Any) -> list[Any]:
        """The runs whose `mlflow.parentRunId` is `parent` (a run, as `get_run` returns)."""
        return self.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )

    def set_status(self, run_id: str, status: str) -> None:
        """RUNNING again, or ended: FINISHED, FAILED, KILLED."""
        if status == "RUNNING":
            self.retry(lambda: self.client.update_run(run_id, status="RUNNING"))
        else:
            self.retry(lambda: self.client.set_terminated(run_id, status=status))

    def fail(self, run_id: str, error: str, *, tags: Mapping[str, str] | None = None) -> None:
        """Add `tags`; a run still RUNNING (its process died before it could close it) gets
        the tag `error` and ends FAILED."""
        self.set_tags(run_id, tags or {})
        if self.get_run(run_id).info.status == "RUNNING":
            self.set_tags(run_id, {"error": error})
            self.set_status(run_id, "FAILED")

    def delete_runs(self, run_ids: Iterable[str]) -> None:
        for run_id in run_ids:
            self.retry(lambda run_id=run_id: self.client.delete_run(run_id))  # type: ignore[misc]

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Add or replace tags; a value past MLflow's limit is cut to it, with a warning."""
        self._log_batch(run_id, "tags", _entities(RunTag, tags, "tag", MAX_TAG_VALUE_LENGTH))

    def delete_tags(self, run_id: str, keys: Iterable[str]) -> None:
        """Remove these tags (ones the run no longer has are skipped)."""
        for key in keys:
            try:
                self.retry(lambda key=key: self.client.delete_tag(run_id, key))  # type: ignore[misc]
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Log params (each once: MLflow refuses a changed value); a value past MLflow's
        limit is cut to it, with a warning."""
        entities = _entities(Param, params, "param", MAX_PARAM_VALUE_LENGTH)
        self._log_batch(run_id, "params", entities)

    def _log_batch(self, run_id: str, kind: str, entities: list[Any]) -> None:
        for start in range(0, len(entities), MAX_TAGS_PER_BATCH):
            chunk = {kind: entities[start : start + MAX_TAGS_PER_BATCH]}
            self.retry(functools.partial(self.client.log_batch, run_id, synchronous=True, **chunk))

    def log_metric(self, run_id: str, key: str, value: float, *, step: int) -> None:
        self.retry(lambda: self.client.log_metric(run_id, key, value, step=step))

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return list(self.retry(lambda: self.client.get_metric_history(run_id, key)))

    def log_artifact(
        self,
        run_id: str,
        local_path: str | os.PathLike[str],
        *,
        artifact_path: str | None = None,
    ) -> None:
        """Upload a file, or a directory's contents, under `artifact_path`."""
        path = Path(local_path)
        if path.is_dir():
            self.retry(lambda: self.client.log_artifacts(run_id, str(path), artifact_path))
        elif path.is_file():
            self.retry(lambda: self.client.log_artifact(run_id, str(path), artifact_path))
        else:
            raise FileNotFoundError(
                f"`local_path` must be an existing file or directory. Received: {str(path)!r}"
            )

    def download_artifact(self, run_id: str, path: str, destination: str | Path) -> Path:
        """Download the run's artifact `path` (a file or directory) into `destination`.

        Raises:
            FileNotFoundError: the run has no such artifact.
        """
        try:
            local = self.retry(
                lambda: self.client.download_artifacts(run_id, path, str(destination))
            )
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"run '{run_id}' has no artifact '{path}' ({exc})") from None
        return Path(local)

    def discard_pending_models(self, run_id: str, experiment_id: str) -> list[str]:
        """Delete the run's logged models left PENDING (an export its process died in); their
        ids. A resumed run exports again; an ended run never shows a half-logged model."""
        from mlflow.entities import LoggedModelStatus

        logged = self.retry(lambda: self.client.search_logged_models([experiment_id]))
        pending = [
            m.model_id
            for m in logged
            if m.source_run_id == run_id and m.status == LoggedModelStatus.PENDING
        ]
        for model_id in pending:
            self.retry(functools.partial(self.client.delete_logged_model, model_id))
        return pending

    def run_models(self, experiment_id: str, run_id: str, name: str) -> list[Any]:
        """The logged models named `name` that the run `run_id` logged (searched by the
        store, not read whole)."""
        query = f"source_run_id = '{run_id}' AND name = '{name}'"
        return list(
            self.retry(
                lambda: self.client.search_logged_models([experiment_id], filter_string=query)
            )
        )

    def drop_superseded_models(
        self, run_id: str, experiment_id: str, *, name: str, keep: str
    ) -> list[str]:
        """Delete the run's earlier logged models named `name` (a resumed run exported again:
        `keep` is the current one), so a run shows one model per name; their ids."""
        logged = self.run_models(experiment_id, run_id, name)
        older = [m.model_id for m in logged if m.model_id != keep]
        for model_id in older:
            self.retry(functools.partial(self.client.delete_logged_model, model_id))
        return older

    # The model registry

    def register_model(
        self,
        name: str,
        *,
        run_id: str,
        model: str = "model",
        model_tags: Mapping[str, str] | None = None,
        version_tags: Mapping[str, str] | None = None,
    ) -> str | None:
        """Register the run's logged model `model` as a new version of `name` (created, with
        `model_tags`, if missing); the version, or None when the run has no such model or is
        already a version of `name`."""
        experiment_id = self.get_run(run_id).info.experiment_id
        found = self.run_models(experiment_id, run_id, model)
        if not found:
            return None
        try:
            versions = list(
                self.retry(lambda: self.client.search_model_versions(f"name = '{name}'"))
            )
        except Exception:  # a store without a model registry: register as the first version
            versions = []
        if any(version.run_id == run_id for version in versions):
            return None
        if not versions:
            try:
                self.retry(
                    lambda: self.client.create_registered_model(name, tags=dict(model_tags or {}))
                )
            except MlflowException as exc:  # registered already, with no versions yet
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        # Once: a retry after a reply lost in transit would register a second version.
        version = self.retry.once()(
            lambda: self.client.create_model_version(
                name,
                source=found[-1].artifact_location,  # not models:/: resolved globally
                run_id=run_id,
                model_id=found[-1].model_id,
                tags=dict(version_tags or {}),
            )
        )
        return str(version.version)


def _entities(
    cls: Callable[[str, str], Any], values: Mapping[str, Any], what: str, limit: int
) -> list[Any]:
    """MLflow `Param`s or `RunTag`s, values cut to MLflow's length limit with a warning."""
    return [
        cls(str(key), _truncated(f"{what} {key!r}", str(value), limit=limit))
        for key, value in values.items()
    ]


def _truncated(what: str, value: str, *, limit: int) -> str:
    if len(value) <= limit:
        return value
    warnings.warn(
        f"MLflow {what} is {len(value)} characters long; truncated to MLflow's limit of {limit}.",
        # _truncated, the comprehension, _entities, MlflowRuns.log_params, MlflowSink's, caller
        stacklevel=6,
    )
    return value[:limit]
