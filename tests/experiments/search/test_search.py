"""`harness search`: real trial processes over a device pool, a real journal-file storage and
a real MLflow store; a trial process killed with SIGKILL; ASHA pruning; bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from experiments.search import optuna_internals
from tests.experiments.configs import write_config
from tests.paths import ROOT

SPACE = {
    "optimizer.learning_rate": {"float": [0.001, 0.1], "log": True},
    "optimizer.name": {"categorical": ["adam", "sgd"]},
    "optimizer.params.momentum": {"float": [0.0, 0.9], "when": {"optimizer.name": "sgd"}},
}


NEVER = {"float": [0, 1], "when": {"optimizer.name": "rmsprop"}}  # not among its choices


def _config(root: Path, experiment: str, search: dict[str, Any], **changes: Any) -> Path:
    return write_config(
        root,
        {
            "trainer.epochs": 2,
            "trainer.log_every_n_steps": 4,
            "tracking.experiment": experiment,
            "tracking.system_metrics_every_s": 0,
            "search": {"metric": "val_accuracy", "direction": "maximize", "space": SPACE, **search},
            **changes,
        },
        f"{experiment}.yaml",
    )


def _slow_batches(seconds: float) -> list[dict[str, Any]]:
    """A callback that sleeps after each batch: a trial still training when the test acts."""
    return [
        {"class_path": "tests.experiments.user_code:SlowBatches", "init_args": {"seconds": seconds}}
    ]


def _study(root: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "searches" / name / "journal.log"))
    )
    return optuna.load_study(study_name=name, storage=storage)


def _children(client: MlflowClient, experiment: str, parent: str) -> list[Any]:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )


@pytest.fixture
def trial_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trial processes can import the tests' user code (callbacks named in configs)."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def _harness(*args: str, cwd: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """`harness ARGS` as a real process (stdout and stderr together), seeing the tests' code."""
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen,
    )


def _tail(process: subprocess.Popen[bytes]) -> str:
    return process.stdout.read().decode()[-3000:]  # type: ignore[union-attr]


def _explained(out: bytes, root: Path, name: str) -> str:
    """The search's output and the end of each trial's log: why a trial ended as it did."""
    logs = sorted((root / "searches" / name).glob("trial-*.log"))
    tails = [f"--- {log.name}\n" + log.read_text(errors="replace")[-1500:] for log in logs]
    return "\n".join([out.decode()[-3000:], *tails])


def test_a_pool_of_placeholder_gpus_runs_one_trial_per_device_as_child_runs(
    in_tmp: Path,
    mlflow_uri: str,
    trial_env: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HARNESS_PLACEHOLDER_GPUS", "1")  # GPU ids this machine does not have
    # The log levels are the CLI's defaults (conftest sets one, as a user could): the trials
    # hide TensorFlow's start-up lines as they do for a user who set none.
    monkeypatch.setenv("HARNESS_QUIET_DEFAULTS", "1")
    config = _config(
        in_tmp, "pool", {"n_trials": 5, "seed": 0}, **{"tracking.system_metrics_every_s": 0.5}
    )
    args = ["search", str(config), "--devices", "7,8,9", "--tracking-uri", mlflow_uri]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "study 'pool' done: 5 trials (5 complete, 0 pruned, 0 failed)" in out

    study = _study(in_tmp, "pool")
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    parent = study.user_attrs["harness.mlflow_parent_run_id"]
    client = MlflowClient(mlflow_uri)
    children = {r.data.tags["harness.trial_number"]: r for r in _children(client, "pool", parent)}
    assert sorted(children) == ["0", "1", "2", "3", "4"]
    # Each trial process saw one placeholder GPU; trials that overlapped in time never shared one.
    spans = []
    for trial in trials:
        run = children[str(trial.number)]
        assert run.info.status == "FINISHED"
        assert run.data.tags["harness.trial_state"] == "COMPLETE"
        assert run.data.tags["harness.study"] == "pool"
        assert run.data.params["optimizer.name"] == trial.params["optimizer.name"]
        device = run.data.tags["harness.cuda_visible_devices"]
        assert device in {"7", "8", "9"}
        assert run.data.tags["harness.device"] == f"gpu{device}"  # the slot, as printed
        # System metrics of the trial's own processes, not MLflow's host-wide ones.
        assert "system/process_cpu_utilization_percentage" in run.data.metrics
        assert "system/process_memory_usage_megabytes" in run.data.metrics
        assert not {"system/cpu_utilization_percentage", "system/disk_usage_megabytes"} & set(
            run.data.metrics
        )
        spans.append((trial.datetime_start, trial.datetime_complete, device))
    overlapping = 0
    for i, (start_a, end_a, device_a) in enumerate(spans):
        for start_b, end_b, device_b in spans[i + 1 :]:
            if start_a < end_b and start_b < end_a:
                overlapping += 1
                assert device_a != device_b, spans
    assert overlapping > 0  # the pool did run trials side by side
    # The parent run: the best value per finished trial, the best params, the trials' table.
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FINISHED"
    best = study.best_trial
    history = client.get_metric_history(parent, "best_val_accuracy")
    steps = [m.step for m in history]  # one point per refresh, step = trials finished
    assert steps == sorted(set(steps)) and steps[-1] == 5, steps
    assert history[-1].value == pytest.approx(best.value)
    assert parent_run.data.tags["best.trial_number"] == str(best.number)
    assert "trials.csv" in {a.path for a in client.list_artifacts(parent)}
    plots = {Path(a.path).name for a in client.list_artifacts(parent, "plots")}
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert {f"{name}.html", f"{name}.png"} <= plots, plots
    assert "intermediate_values.png" in plots
    # The best trial's model, registered under the study's name, from the trial's run.
    (version,) = client.search_model_versions("name = 'pool'")
    assert version.run_id == children[str(best.number)].info.run_id
    # harness runs --study: the trials, best first.
    from experiments.ui.study_table import study_frame

    frame = study_frame(mlflow_uri, "pool")
    assert list(frame["trial"])[0] == best.number
    assert list(frame["value"]) == sorted(frame["value"], reverse=True)
    assert frame["value"].iloc[0] == pytest.approx(best.value)
    assert "trial 4 complete on gpu" in out  # a line per trial when piped (no progress bar)
    for log in (in_tmp / "searches" / "pool").glob("trial-*.log"):  # no TensorFlow start-up
        assert "absl::InitializeLog" not in log.read_text() and "cuda" not in log.read_text()
    # The end: the best trial rounded, its run, the parent's page and where to look next.
    best_run = children[str(best.number)].info.run_id
    assert (
        f"  best:       trial {best.number}, val_accuracy {best.value:.4g} (run {best_run[:8]})"
        in out
    )
    assert f"  parent run: {parent}" in out
    assert f"/runs/{parent}?workflowType=machine_learning" in out
    assert "runs --study pool --tracking-uri" in out
    capsys.readouterr()
    assert main(["runs", "--study", "pool", "--tracking-uri", mlflow_uri]) == 0
    assert capsys.readouterr().out.count("COMPLETE") == 5


def _checkpoints(root: Path, experiment: str) -> int:
    return len(list((root / "checkpoints" / experiment).glob("*/ckpt-*/manifest.json")))


def _wait_for_checkpoints(root: Path, experiment: str, count: int, search: Any) -> None:
    deadline = time.monotonic() + 240
    while _checkpoints(root, experiment) < count:
        assert search.poll() is None, _tail(search)
        assert time.monotonic() < deadline, f"not {count} trial checkpoints within 4 minutes"
        time.sleep(0.05)


def test_a_killed_trial_is_retried_at_once_and_a_killed_supervisor_s_trial_continues_later(
    in_tmp: Path, mlflow_uri: str, trial_env: None
) -> None:
    import psutil

    config = _config(
        in_tmp,
        "killed",
        {"n_trials": 2, "seed": 1},
        **{
            "trainer.epochs": 3,
            "checkpoint.every_n_steps": 2,
            "checkpoint.keep_last": 20,
            "callbacks": _slow_batches(0.05),
        },
    )
    command = ["search", str(config), "--devices", "cpu:1", "--tracking-uri", mlflow_uri]
    search = _harness(*command, cwd=in_tmp)
    _wait_for_checkpoints(in_tmp, "killed", 1, search)
    (trial_process,) = [
        p
        for p in psutil.Process(search.pid).children()
        if "experiments.search.trial" in p.cmdline()
    ]
    trial_process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    study = _study(in_tmp, "killed")
    while study.get_trials()[0].state != optuna.trial.TrialState.FAIL:
        assert time.monotonic() - killed_at < 10, "the dead trial is still RUNNING"
        time.sleep(0.05)
    client = MlflowClient(mlflow_uri)
    run_id = study.get_trials()[0].user_attrs["harness.run_id"]
    failed = client.get_run(run_id)
    assert failed.info.status == "FAILED"
    assert failed.data.tags["harness.exit"] == "killed by SIGKILL"

    # The retry (trial 1) continues the same run; once it has checkpointed again, the
    # supervisor itself is SIGKILLed: its orphaned trial stops, checkpointed, and hands
    # itself back (FAIL, its continuation enqueued), leaving nothing RUNNING.
    reached = _checkpoints(in_tmp, "killed")
    _wait_for_checkpoints(in_tmp, "killed", reached + 1, search)
    search.send_signal(signal.SIGKILL)
    out = _tail(search)
    assert "trial 0 failed on cpu0 (killed by SIGKILL): retrying it" in out
    killed_at = time.monotonic()
    while [t.state.name for t in study.get_trials()] != ["FAIL", "FAIL", "WAITING"]:
        assert time.monotonic() - killed_at < 30, [t.state.name for t in study.get_trials()]
        time.sleep(0.1)
    orphan = study.get_trials()[1]
    assert orphan.user_attrs["harness.run_id"] == run_id
    assert study.get_trials()[2].user_attrs["harness.retry_of"] == 1
    assert client.get_run(run_id).data.tags["harness.exit"] == "stopped: its supervisor ended"

    # The same command again: the continuation resumes the run, a new trial completes too.
    again = _harness(*command, cwd=in_tmp)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 0, out.decode()[-3000:]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    continued = trials[2]
    assert continued.params == trials[0].params
    assert continued.user_attrs["harness.run_id"] == run_id  # one run through it all
    assert "harness.retry_of" not in trials[3].user_attrs  # the study's second trial
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert "harness.resumed_from" in resumed.data.tags  # from the checkpoint, not afresh
    assert resumed.data.tags["harness.trial_number"] == "2"


def test_ctrl_c_stops_the_trials_at_a_checkpoint_and_the_same_command_continues(
    in_tmp: Path, mlflow_uri: str, trial_env: None
) -> None:
    config = _config(
        in_tmp,
        "stopped",
        {"n_trials": 3, "seed": 3},
        **{
            "trainer.epochs": 3,
            "checkpoint.every_n_steps": 2,
            "callbacks": _slow_batches(0.3),
        },
    )
    command = ["search", str(config), "--devices", "cpu:2", "--tracking-uri", mlflow_uri]
    # Its own process group, as a command on a terminal.
    search = _harness(*command, cwd=in_tmp, start_new_session=True)
    deadline = time.monotonic() + 240
    saved = in_tmp / "checkpoints" / "stopped"
    while len({p.parents[1] for p in saved.glob("*/ckpt-*/manifest.json")}) < 2:
        assert search.poll() is None, _tail(search)
        assert time.monotonic() < deadline, "no two trial checkpoints within 4 minutes"
        time.sleep(0.05)
    os.killpg(search.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground group
    out, _ = search.communicate(timeout=120)
    assert search.returncode == 130, out.decode()[-3000:]
    assert out.decode().count(": continued next time") == 2
    study = _study(in_tmp, "stopped")
    stopped = study.get_trials()
    states = [t.state.name for t in stopped]
    assert states == ["FAIL", "FAIL", "WAITING", "WAITING"], _explained(out, in_tmp, "stopped")
    client = MlflowClient(mlflow_uri)
    parent = study.user_attrs["harness.mlflow_parent_run_id"]
    assert client.get_run(parent).info.status == "KILLED"
    for trial in stopped[:2]:
        run = client.get_run(trial.user_attrs["harness.run_id"])
        assert run.info.status == "KILLED"  # stopped at a step boundary, its checkpoint saved

    # The same command again, with --n-trials: the two stopped trials continue, one is added.
    again = _harness(*command, "--n-trials", "1", cwd=in_tmp)
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out.decode()[-3000:]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"] + ["COMPLETE"] * 3
    assert sorted(t.user_attrs.get("harness.retry_of") for t in trials[2:4]) == [0, 1]
    for trial in trials[2:4]:
        run = client.get_run(trial.user_attrs["harness.run_id"])
        assert run.info.status == "FINISHED"
        assert "harness.resumed_from" in run.data.tags  # from the checkpoint, not afresh
    assert "harness.retry_of" not in trials[4].user_attrs  # the one added
    assert client.get_run(parent).info.status == "FINISHED"  # the same parent run, closed
    assert len(_children(client, "stopped", parent)) == 3


def test_two_cpu_slots_search_two_metrics_with_nsga2(
    in_tmp: Path, mlflow_uri: str, trial_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    search = {
        "metric": ["val_accuracy", "val_loss"],
        "direction": ["maximize", "minimize"],
        "sampler": "nsga2",
        "n_trials": 4,
        "seed": 5,
    }
    config = _config(in_tmp, "pareto", search, **{"trainer.epochs": 1})
    args = ["search", str(config), "--devices", "cpu:2", "--tracking-uri", mlflow_uri]
    assert main(args) == 0
    assert "study 'pareto' done: 4 trials (4 complete, 0 pruned, 0 failed)" in (
        capsys.readouterr().out
    )
    study = _study(in_tmp, "pareto")
    assert study.directions == [
        optuna.study.StudyDirection.MAXIMIZE,
        optuna.study.StudyDirection.MINIMIZE,
    ]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert all(len(t.values) == 2 for t in trials)
    client = MlflowClient(mlflow_uri)
    parent = study.user_attrs["harness.mlflow_parent_run_id"]
    children = _children(client, "pareto", parent)
    assert sorted(r.data.tags["harness.trial_number"] for r in children) == ["0", "1", "2", "3"]
    assert {r.data.tags["harness.cuda_visible_devices"] for r in children} == {""}  # no GPU
    assert {r.data.tags["harness.device"] for r in children} <= {"cpu0", "cpu1"}
    by_number = {int(r.data.tags["harness.trial_number"]): r for r in children}
    for trial in trials:  # each run's values are its best epoch's, as told to Optuna
        tagged = by_number[trial.number].data.tags["harness.trial_value"].split(",")
        assert [float(v) for v in tagged] == pytest.approx(trial.values, rel=1e-6)
    parent_run = client.get_run(parent)
    front = sorted(t.number for t in study.best_trials)
    assert parent_run.data.tags["best.pareto_front"] == ",".join(map(str, front))
    assert {"best_val_accuracy", "best_val_loss"} <= set(parent_run.data.metrics)
    plots = {Path(a.path).name for a in client.list_artifacts(parent, "plots")}
    assert {"pareto_front.html", "pareto_front.png"} <= plots


def test_asha_prunes_clearly_bad_trials_early(
    in_tmp: Path, mlflow_uri: str, trial_env: None
) -> None:
    config = _config(
        in_tmp,
        "asha",
        {
            "n_trials": 4,
            "seed": 5,  # the random sampler's order: good, good, good, bad
            "sampler": "random",
            "pruner": {"name": "asha", "params": {"min_resource": 1, "reduction_factor": 2}},
            "space": {"optimizer.learning_rate": {"categorical": [1.0e-6, 0.05]}},
        },
        **{"trainer.epochs": 3},
    )
    assert main(["search", str(config), "--devices", "cpu:1", "--tracking-uri", mlflow_uri]) == 0
    study = _study(in_tmp, "asha")
    pruned = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, [(t.params, t.intermediate_values) for t in study.get_trials()]
    client = MlflowClient(mlflow_uri)
    for trial in pruned:
        assert trial.params["optimizer.learning_rate"] == 1.0e-6  # the bad ones
        assert len(trial.intermediate_values) < 3  # stopped before its last epoch
        run = client.get_run(trial.user_attrs["harness.run_id"])
        assert run.info.status == "FINISHED"  # not a failure: the UI shows no red cross
        assert run.data.tags["harness.trial_state"] == "PRUNED"
        assert run.info.run_name.endswith(" (pruned)")
        assert "error" not in run.data.tags


@pytest.mark.parametrize(
    ("change", "args", "expected"),
    [
        ({"search": None}, [], "the config has no search: section"),
        ({"search.space": {}}, [], "search.space is empty"),
        (
            {"search.space": {"optimizer.lr": {"float": [0.1, 1.0]}}},
            [],
            "'optimizer.lr' is not a config key",
        ),
        ({"search.sampler": "tp"}, [], "search.sampler: Input should be 'tpe'"),
        ({"search.pruner": "ashaa"}, [], "search.pruner.name: Input should be"),
        (
            {
                "search.space": {
                    **SPACE,
                    "optimizer.params.momentum": {
                        "float": [0, 1],
                        "when": {"optimizer.name": "rmsprop"},
                    },
                }
            },
            [],
            "optimizer.name is never 'rmsprop'",
        ),
        ({}, ["--devices", "cpu:2", "--storage", "sqlite:///optuna.db"], "SQLite takes one writer"),
        (
            {},
            ["--storage", "postgresql+psycopg://postgres:secret@127.0.0.1:1/test"],
            "cannot open the Optuna storage",
        ),
        ({"search.metric": "val_acc"}, [], "search.metric 'val_acc' is not logged by the run"),
        (
            {},
            ["--storage", "postgresql://postgres:secret@127.0.0.1:5432/test"],
            "with the psycopg2 driver, which is not installed; the installed driver is psycopg 3",
        ),
        (
            {"search.heartbeat_s": 30, "search.grace_period_s": 20},
            [],
            "search.grace_period_s (20) must exceed search.heartbeat_s (30)",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_study(
    change: dict[str, Any],
    args: list[str],
    expected: str,
    in_tmp: Path,
    mlflow_uri: str,
    trial_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(in_tmp, "bad", {"n_trials": 1})
    if change:
        import yaml

        raw = yaml.safe_load(config.read_text())
        for dotted, value in change.items():
            section, _, key = dotted.partition(".")
            if key:
                raw[section][key] = value
            else:
                raw[section] = value
        config.write_text(yaml.safe_dump(raw))
    code = main(["search", str(config), "--tracking-uri", mlflow_uri, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    # MLflow's own INFO lines when it creates a new store are not ours: the rest is one line.
    lines = [line for line in err.strip().splitlines() if " INFO mlflow." not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert "secret" not in err  # a storage password is never shown
    journal = in_tmp / "searches" / "bad" / "journal.log"
    if journal.exists():
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))
        )
        assert optuna.get_all_study_names(storage) == []
    experiment = MlflowClient(mlflow_uri).get_experiment_by_name("bad")
    if experiment is not None:
        assert MlflowClient(mlflow_uri).search_runs([experiment.experiment_id]) == []


def _study_exists(storage: str, name: str) -> bool:
    """The study and its MLflow parent run exist (so the MLflow store's tables do: the workers
    would otherwise race the search creating them). Read without creating Optuna's tables."""
    import psycopg

    try:
        with psycopg.connect(storage.replace("+psycopg", "")) as connection:
            rows = connection.execute(
                "SELECT s.study_name FROM studies s JOIN study_user_attributes a "
                "ON a.study_id = s.study_id WHERE a.key = 'harness.mlflow_parent_run_id'"
            ).fetchall()
    except psycopg.Error:
        return False
    return (name,) in rows


def _wait_for_study(storage: str, name: str, search: subprocess.Popen[bytes]) -> optuna.Study:
    deadline = time.monotonic() + 120
    while not _study_exists(storage, name):  # the workers join once the study exists
        assert search.poll() is None, _tail(search)
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return optuna.load_study(study_name=name, storage=storage)


def test_three_workers_on_postgresql_finish_exactly_the_study_s_trials(
    in_tmp: Path, trial_env: None, postgres_databases: list[str]
) -> None:
    storage, tracking = postgres_databases
    config = _config(
        in_tmp,
        "shared",
        {"n_trials": 30, "seed": 2},
        **{"trainer.epochs": 1, "data.params.limit": 120},
    )
    common = ["--storage", storage, "--tracking-uri", tracking, "--devices", "cpu:1"]
    # The search creates the study and its parent run; three workers join it.
    search = _harness("search", str(config), *common, cwd=in_tmp)
    study = _wait_for_study(storage, "shared", search)
    workers = [_harness("worker", "--study", "shared", *common, cwd=in_tmp) for _ in range(3)]
    ran = []
    for process in [search, *workers]:
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, out.decode()[-3000:]
        ran.append(out.decode().count(" complete on cpu0"))
    assert all(ran[1:]), ran  # every worker ran some trials
    trials = study.get_trials()
    assert len(trials) == 30 and sum(ran) == 30
    assert sorted(t.number for t in trials) == list(range(30))  # none twice
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}  # none RUNNING
    # Every one a child run of the one parent run, in the one tracking store.
    client = MlflowClient(tracking)
    parent = study.user_attrs["harness.mlflow_parent_run_id"]
    children = _children(client, "shared", parent)
    assert sorted(int(r.data.tags["harness.trial_number"]) for r in children) == list(range(30))
    assert all("secret" not in str(r.data.tags) for r in children)
    # Each supervisor registers the best at its end, one at a time: the study's best run is
    # registered, and no run twice.
    versions = client.search_model_versions("name = 'shared'")
    assert study.best_trial.user_attrs["harness.run_id"] in {v.run_id for v in versions}
    assert len({v.run_id for v in versions}) == len(versions)


def test_a_vanished_machine_s_trial_is_failed_by_heartbeat_and_retried_by_a_worker(
    in_tmp: Path, trial_env: None, postgres_databases: list[str]
) -> None:
    import psutil

    storage, tracking = postgres_databases
    config = _config(
        in_tmp,
        "vanished",
        {"n_trials": 2, "seed": 4, "heartbeat_s": 1, "grace_period_s": 4},
        **{
            "trainer.epochs": 2,
            "checkpoint.every_n_steps": 2,
            "data.params.limit": 200,
            "callbacks": _slow_batches(0.3),
        },
    )
    common = ["--storage", storage, "--tracking-uri", tracking, "--devices", "cpu:1"]
    search = _harness("search", str(config), *common, cwd=in_tmp)
    study = _wait_for_study(storage, "vanished", search)
    deadline = time.monotonic() + 240
    while not list((in_tmp / "checkpoints" / "vanished").glob("*/ckpt-*/manifest.json")):
        assert search.poll() is None, _tail(search)
        assert time.monotonic() < deadline, "no trial checkpoint within 4 minutes"
        time.sleep(0.05)
    machine = [psutil.Process(search.pid), *psutil.Process(search.pid).children(recursive=True)]
    for process in machine:  # the machine vanishes: supervisor and trial, no goodbye
        process.kill()
    search.wait()
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.RUNNING  # nobody told Optuna
    run_id = trial.user_attrs["harness.run_id"]
    # It ran on another machine: a supervisor here cannot see its processes, only its beats.
    for attr in ("harness.supervisor", "harness.trial_process"):
        recorded = trial.user_attrs[attr].split(":", 1)[1]
        optuna_internals.storage(study).set_trial_user_attr(
            optuna_internals.trial_id(trial), attr, f"gone-host:{recorded}"
        )

    worker = _harness("worker", "--study", "vanished", *common, cwd=in_tmp)
    out, _ = worker.communicate(timeout=400)
    assert worker.returncode == 0, out.decode()[-3000:]
    assert "trial 0 failed (its machine stopped sending heartbeats): retrying it" in out.decode()
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    (retry,) = [t for t in trials if t.user_attrs.get("harness.retry_of") == 0]
    assert retry.params == trial.params
    run = MlflowClient(tracking).get_run(run_id)
    assert run.data.tags["harness.exit"] == "its machine stopped sending heartbeats"
    assert run.info.status == "FINISHED"  # continued by the retry
    assert "harness.resumed_from" in run.data.tags  # from the dead trial's checkpoint


def test_the_parent_s_plots_are_redrawn_at_most_every_30_s_and_5_percent_of_the_time() -> None:
    from experiments.search.parent import Refresher

    clock = [1000.0]
    drawn: list[bool] = []

    def refresh(*, plots: bool) -> None:
        drawn.append(plots)
        clock[0] += 3.0 if plots else 0.1  # drawing the plots took 3 s, the table 0.1 s

    refresher = Refresher(refresh, clock=lambda: clock[0])
    for gap in (0, 10, 20, 40, 10, 30, 30):  # seconds between trials' ends
        clock[0] += gap
        refresher()
    # Drawn first, then not before 60 s (20 × the 3 s they took) after that drawing began.
    assert drawn == [True, False, False, True, False, False, True]
