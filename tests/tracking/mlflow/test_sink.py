"""MlflowSink against a real sqlite MLflow store (and a closed port for the failure paths)."""

from __future__ import annotations

import json
import socket
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tracking.mlflow.sink import MlflowSink


def _history(sink: MlflowSink, name: str) -> list[tuple[int, float]]:
    metrics = MlflowClient(sink.tracking_uri).get_metric_history(sink.run_id, name)
    return sorted((metric.step, metric.value) for metric in metrics)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_more_than_one_batch_of_metrics_arrives_complete(start_mlflow_sink: Any) -> None:
    sink = start_mlflow_sink()
    for step in range(1250):  # 2,500 points: three log_batch requests of at most 1,000
        sink.log_metrics({"loss": step * 0.5, "accuracy": step * 0.25}, step=step)
    sink.flush()
    assert _history(sink, "loss") == [(step, step * 0.5) for step in range(1250)]
    assert _history(sink, "accuracy") == [(step, step * 0.25) for step in range(1250)]
    sink.close()


def test_failed_run_keeps_full_error_as_artifact(start_mlflow_sink: Any, tmp_path: Path) -> None:
    sink = start_mlflow_sink()
    error = "Traceback (most recent call last):\n" + "  frame\n" * 1000 + "ValueError: boom"
    sink.close("FAILED", error=error)
    client = MlflowClient(sink.tracking_uri)
    run = client.get_run(sink.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith("Traceback (most recent call last):")
    assert len(run.data.tags["error"]) <= 5000 < len(error)
    local = client.download_artifacts(sink.run_id, "error.txt", str(tmp_path))
    assert Path(local).read_text(encoding="utf-8") == error


def test_killed_run_has_no_error_tag(start_mlflow_sink: Any) -> None:
    sink = start_mlflow_sink()
    sink.close("KILLED")
    run = MlflowClient(sink.tracking_uri).get_run(sink.run_id)
    assert run.info.status == "KILLED"
    assert "error" not in run.data.tags


def test_start_sets_run_name_and_tags(start_mlflow_sink: Any, experiment_name: str) -> None:
    sink = start_mlflow_sink(run_name="trial-7", tags={"sweep": "lr"})
    client = MlflowClient(sink.tracking_uri)
    run = client.get_run(sink.run_id)
    assert run.info.run_name == "trial-7"
    assert run.data.tags["sweep"] == "lr"
    assert sink.experiment_id == client.get_experiment_by_name(experiment_name).experiment_id
    sink.close()


class _CreatedInBetween(MlflowClient):
    """A real client whose first lookup finds nothing, after which another process (a second
    real client) creates the experiment: the exact interleaving of two workers starting."""

    def get_experiment_by_name(self, name: str) -> Any:
        found = super().get_experiment_by_name(name)
        if not getattr(self, "raced", False):
            self.raced = True
            assert found is None
            MlflowClient(self.tracking_uri).create_experiment(name)
        return found


def test_an_experiment_created_between_lookup_and_create_is_used(
    mlflow_uri: str, experiment_name: str
) -> None:
    from tracking.mlflow.runs import MlflowRuns

    client = _CreatedInBetween(mlflow_uri)
    experiment_id = MlflowRuns(mlflow_uri, client=client).experiment_id(experiment_name)
    assert client.raced
    assert (
        experiment_id
        == MlflowClient(mlflow_uri).get_experiment_by_name(experiment_name).experiment_id
    )


def test_concurrent_starts_share_one_experiment(start_mlflow_sink: Any) -> None:
    sinks: list[MlflowSink] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()  # start together so lookups and creates interleave
        try:
            sinks.append(start_mlflow_sink(retry_backoff_s=0.05, metrics_in_subprocess=False))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({sink.experiment_id for sink in sinks}) == 1
    assert len({sink.run_id for sink in sinks}) == 8
    for sink in sinks:
        sink.close()


def test_attached_sink_resumes_a_run(start_mlflow_sink: Any) -> None:
    first = start_mlflow_sink()
    first.log_metrics({"loss": 2.0}, step=0)
    first.close("KILLED")
    resumed = MlflowSink(MlflowClient(first.tracking_uri), first.run_id)
    resumed.log_metrics({"loss": 1.0}, step=1)
    resumed.close()
    assert resumed.experiment_id == first.experiment_id
    assert _history(resumed, "loss") == [(0, 2.0), (1, 1.0)]
    assert MlflowClient(first.tracking_uri).get_run(first.run_id).info.status == "FINISHED"


def test_resume_sends_what_an_earlier_attempt_journaled_once(
    start_mlflow_sink: Any, tmp_path: Path
) -> None:
    from tracking.mlflow.delivery.journal import MetricJournal

    template = str(tmp_path / "{run_id}" / "metrics.journal")
    first = start_mlflow_sink(journal_path=template)
    first.log_metrics({"loss": 3.0}, step=1)
    first.close("KILLED")
    # What the first attempt journaled and never got through (the server was down, then the
    # process was killed): step 1 again (delivered, its mark lost), and 2 and 3.
    left = MetricJournal(first.journal, run_id=first.run_id, tracking_uri=first.tracking_uri)
    left.append([("loss", 3.0, 1, 1000), ("loss", 2.0, 2, 2000), ("acc", 0.5, 2, 2000)])
    left.sync()
    with pytest.warns(UserWarning, match="sent the 2 metric points an earlier attempt could not"):
        resumed = MlflowSink.resume(first.tracking_uri, first.run_id, journal_path=template)
    resumed.log_metrics({"loss": 2.0, "acc": 0.5}, step=2)  # recomputed: not sent again
    resumed.log_metrics({"loss": 1.0}, step=3)
    resumed.close()
    assert _history(resumed, "loss") == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert _history(resumed, "acc") == [(2, 0.5)]
    assert not first.journal.exists()  # all delivered


def test_deleted_experiment_is_reported(
    mlflow_uri: str, experiment_name: str, start_mlflow_sink: Any
) -> None:
    start_mlflow_sink().close()
    client = MlflowClient(mlflow_uri)
    client.delete_experiment(client.get_experiment_by_name(experiment_name).experiment_id)
    with pytest.raises(ValueError, match="is deleted. Restore it"):
        start_mlflow_sink()


def test_many_params_are_sent_in_chunks(start_mlflow_sink: Any) -> None:
    sink = start_mlflow_sink()
    params = {f"p{i:03d}": i for i in range(250)}  # MLflow takes at most 100 per request
    sink.log_params(params)
    assert MlflowClient(sink.tracking_uri).get_run(sink.run_id).data.params == {
        key: str(value) for key, value in params.items()
    }
    sink.close()


def test_long_param_value_is_truncated_with_a_warning(start_mlflow_sink: Any) -> None:
    sink = start_mlflow_sink()
    with pytest.warns(UserWarning, match="param 'layers' is 7000 characters long; truncated"):
        sink.log_params({"layers": "x" * 7000})
    assert MlflowClient(sink.tracking_uri).get_run(sink.run_id).data.params["layers"] == "x" * 6000
    sink.close()


def test_file_and_directory_artifacts(start_mlflow_sink: Any, tmp_path: Path) -> None:
    sink = start_mlflow_sink()
    (tmp_path / "config.yaml").write_text("lr: 0.1\n")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "loss.svg").write_text("<svg/>")
    sink.log_artifact(tmp_path / "config.yaml")
    sink.log_artifact(tmp_path / "plots", artifact_path="figures")
    with pytest.raises(FileNotFoundError, match="`local_path` must be an existing file"):
        sink.log_artifact(tmp_path / "missing.txt")
    client = MlflowClient(sink.tracking_uri)
    assert {a.path for a in client.list_artifacts(sink.run_id)} == {"config.yaml", "figures"}
    assert [a.path for a in client.list_artifacts(sink.run_id, "figures")] == ["figures/loss.svg"]
    sink.close()


def test_refused_metric_does_not_block_the_others(start_mlflow_sink: Any) -> None:
    sink = start_mlflow_sink(retry_backoff_s=0.01)
    sink.log_metrics({"loss": 0.5, "bad name!": 1.0}, step=3)
    with pytest.warns(UserWarning, match="refused 1 points of metric 'bad name!'"):
        sink.flush()
    assert _history(sink, "loss") == [(3, 0.5)]
    journal = sink.journal
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing more to say: it was refused for good
        sink.close()
    assert not journal.exists()  # nothing left to deliver


def test_an_unreachable_server_loses_no_point(
    mlflow_uri: str, experiment_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracking.mlflow.delivery.journal import read
    from tracking.mlflow.delivery.replay import deliver_journal
    from tracking.mlflow.runs import MlflowRuns

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    store = MlflowClient(mlflow_uri)
    run_id = store.create_run(store.create_experiment(experiment_name)).info.run_id
    dead_uri = f"http://127.0.0.1:{_closed_port()}"
    journal = tmp_path / "checkpoints" / run_id / "metrics.journal"
    sink = MlflowSink(
        MlflowClient(dead_uri),
        run_id,
        max_retries=1,
        retry_backoff_s=0.01,
        journal_path=str(journal),
    )
    expected = []
    for step in range(20):
        sink.log_metrics({"loss": step * 0.5, "accuracy": step * 0.25}, step=step)
        expected += [("loss", step * 0.5, step), ("accuracy", step * 0.25, step)]

    with pytest.warns(UserWarning, match="40 metric points are pending and will be retried"):
        sink.flush()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sink.close("FAILED", error="ConnectionError")
    messages = "\n".join(str(w.message) for w in caught)
    assert f"40 metric points could not be sent; they are kept in {journal}" in messages
    assert f"python -m tracking.mlflow.delivery.journal {journal}" in messages
    assert "could not set its status to FAILED" in messages

    held = read(journal)
    assert held is not None and (held.run_id, held.tracking_uri) == (run_id, dead_uri)
    assert sorted(point[:3] for point in held.undelivered) == sorted(expected)

    # Nothing was lost: the journal, delivered to the real store, completes the run's history.
    assert deliver_journal(journal, runs=MlflowRuns(mlflow_uri)) == 40
    history = store.get_metric_history(run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(s, s * 0.5) for s in range(20)]
    assert not journal.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "`max_retries` must be >= 0. Received: max_retries=-1"),
        ({"retry_backoff_s": -0.5}, "`retry_backoff_s` must be >= 0"),
        ({"send_interval_s": 0}, "`send_interval_s` must be > 0"),
        ({"subprocess_after_cpu_s": -1}, "`subprocess_after_cpu_s` must be >= 0"),
    ],
)
def test_invalid_constructor_arguments(mlflow_uri: str, kwargs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MlflowSink(MlflowClient(mlflow_uri), "0" * 32, **kwargs)


def test_log_model_round_trip(start_mlflow_sink: Any, mlflow_uri: str) -> None:
    import keras
    import mlflow
    import mlflow.keras
    import mlflow.models
    import numpy as np

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    sink = start_mlflow_sink()
    sink.log_model(model, input_example=x)
    sink.close()

    # runs:/ URIs resolve against the global tracking URI, which other tests may have set.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_uri)
    try:
        uri = f"runs:/{sink.run_id}/model"
        loaded = mlflow.keras.load_model(uri)
        signature = mlflow.models.get_model_info(uri).signature
    finally:
        mlflow.set_tracking_uri(previous)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert signature is not None
    assert tuple(signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (-1, 4)


def test_logged_models_use_the_sinks_run_not_the_fluent_globals(
    start_mlflow_sink: Any, mlflow_uri: str
) -> None:
    import keras
    import mlflow
    import numpy as np

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    x = np.zeros((2, 4), np.float32)
    first, second = start_mlflow_sink(), start_mlflow_sink()
    first.log_params({"lr": 0.1})
    first.log_metrics({"loss": 0.5, "acc": 0.25}, step=3)
    first.log_metrics({"loss": 0.25}, step=6)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri("sqlite:///elsewhere-must-not-be-touched.db")
    try:
        final = first.log_model(model, input_example=x, step=6)
        ema = first.log_model(model, name="ema_model", step=3, metrics={"acc": 0.25})
        other = second.log_model(model, step=0)
        assert mlflow.active_run() is None
        assert mlflow.get_tracking_uri() == "sqlite:///elsewhere-must-not-be-touched.db"
    finally:
        mlflow.set_tracking_uri(previous)
    first.close()
    second.close()
    client = MlflowClient(mlflow_uri)
    outputs = client.get_run(first.run_id).outputs.model_outputs
    assert {(o.model_id, o.step) for o in outputs} == {(final, 6), (ema, 3)}
    assert [o.model_id for o in client.get_run(second.run_id).outputs.model_outputs] == [other]
    final_model, ema_model = client.get_logged_model(final), client.get_logged_model(ema)
    assert (final_model.name, ema_model.name) == ("model", "ema_model")
    assert final_model.params == {"lr": "0.1"} and str(final_model.status) == "READY"
    # Linked: the run's points at the model's step (or those named), with no copies added.
    assert {(m.key, m.value, m.step) for m in final_model.metrics} == {("loss", 0.25, 6)}
    assert {(m.key, m.value, m.step) for m in ema_model.metrics} == {("acc", 0.25, 3)}
    assert len(client.get_metric_history(first.run_id, "loss")) == 2
    assert len(client.get_metric_history(first.run_id, "acc")) == 1


def test_datasets_are_run_inputs(start_mlflow_sink: Any, mlflow_uri: str) -> None:

    import numpy as np

    from tracking import DatasetRecord

    sink = start_mlflow_sink()
    x, y = np.ones((20, 3), np.float32), np.arange(20)
    sink.log_dataset(DatasetRecord("arrays", "pkg.data:load", features=x, targets=y))
    sink.log_dataset(DatasetRecord("stream", "pkg.data:gen", context="validation", num_examples=7))
    sink.close()
    inputs = MlflowClient(mlflow_uri).get_run(sink.run_id).inputs.dataset_inputs
    by_name = {d.dataset.name: d for d in inputs}
    arrays, stream = by_name["arrays"], by_name["stream"]
    assert json.loads(arrays.dataset.profile)["features_shape"] == [20, 3]
    assert "pkg.data:load" in arrays.dataset.source and arrays.dataset.digest
    assert [(t.key, t.value) for t in stream.tags] == [("mlflow.data.context", "validation")]
    assert json.loads(stream.dataset.profile) == {"num_rows": 7}


def test_runs_logging_the_same_dataset_at_once_all_record_it(
    start_mlflow_sink: Any, mlflow_uri: str
) -> None:
    """The trials of a search log the same data at the same moment: MLflow looks a data set up
    and then inserts it, so all but one of them lose that race to the table's unique key."""
    import numpy as np

    from tracking import DatasetRecord

    x, y = np.ones((20, 3), np.float32), np.arange(20)
    sinks = [start_mlflow_sink(metrics_in_subprocess=False) for _ in range(6)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(sinks))

    def log(sink: MlflowSink) -> None:
        barrier.wait()  # together, so the lookups come before the inserts
        try:
            sink.log_dataset(DatasetRecord("digits", "pkg.data:load", features=x, targets=y))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=log, args=(sink,)) for sink in sinks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    client = MlflowClient(mlflow_uri)
    digests = set()
    for sink in sinks:
        sink.close()
        (logged,) = client.get_run(sink.run_id).inputs.dataset_inputs
        digests.add((logged.dataset.name, logged.dataset.digest))
    assert len(digests) == 1  # one data set, every run linked to it


def test_system_metrics_are_sampled_until_close(start_mlflow_sink: Any, mlflow_uri: str) -> None:
    import threading
    import time

    sink, short = start_mlflow_sink(), start_mlflow_sink()
    sink.monitor_system(0.2)
    short.monitor_system(30)  # a run shorter than one interval
    time.sleep(1.5)
    sink.close()
    short.close()
    client = MlflowClient(mlflow_uri)
    cpu = client.get_metric_history(sink.run_id, "system/cpu_utilization_percentage")
    assert len(cpu) >= 2 and [m.step for m in cpu] == list(range(len(cpu)))
    # A sample at the start, and the last, partial interval at close: a short run's charts
    # have two points, not one bar.
    short_cpu = client.get_metric_history(short.run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in short_cpu] == [0, 1]
    for point in [*cpu, *short_cpu]:  # rounded: no 0.0012440000000424334
        assert point.value == float(f"{point.value:.4g}")
    assert "SystemMetricsMonitor" not in {t.name for t in threading.enumerate()}
    rejected = start_mlflow_sink()
    try:
        with pytest.raises(ValueError, match="`every_s` must be > 0. Received: every_s=0"):
            rejected.monitor_system(0)
    finally:
        rejected.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_retries", 1),
        ("retry_backoff_s", 0.01),
        ("send_interval_s", 0.25),
        ("metrics_in_subprocess", False),
        ("subprocess_after_cpu_s", 0.5),
        ("expected_metric_points", 10),
        ("writer_timeout_s", 7.0),
        ("journal_path", "/tmp/harness-option-test-{run_id}.journal"),
    ],
)
def test_every_option_is_taken_by_the_constructor_start_and_resume_alike(
    mlflow_uri: str, experiment_name: str, name: str, value: Any
) -> None:
    from tracking.mlflow import MlflowOptions

    started = MlflowSink.start(mlflow_uri, experiment=experiment_name, **{name: value})
    resumed = MlflowSink.resume(mlflow_uri, started.run_id, **{name: value})
    attached = MlflowSink(MlflowClient(mlflow_uri), started.run_id, **{name: value})
    given = MlflowOptions(**{name: value})
    via_options = MlflowSink.start(mlflow_uri, experiment=experiment_name, options=given)
    for sink in (started, resumed, attached, via_options):
        assert getattr(sink.options, name) == value
        assert sink.options == given
        sink.close()


def test_an_unknown_option_is_named_with_the_options_there_are(mlflow_uri: str) -> None:
    with pytest.raises(TypeError, match=r"unexpected options \['max_retry'\]; its options are"):
        MlflowSink.start(mlflow_uri, experiment="x", max_retry=2)
