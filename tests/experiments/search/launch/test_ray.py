"""`harness search --launcher ray` on a real two-node Ray cluster on this machine: trials
placed on declared GPUs across both nodes, ASHA pruning, a node killed mid-trial and its
trial retried on the other from its mirrored checkpoint; a local Ray instance with
PostgreSQL storage; bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from tests.experiments.configs import write_config
from tests.experiments.search.launch.ray_nodes import Cluster, start_cluster
from tests.paths import ROOT

ASHA = {
    "metric": "val_accuracy",
    "direction": "maximize",
    "sampler": "random",
    "seed": 5,  # the random sampler's order: good, good, good, bad, bad, good
    "pruner": {"name": "asha", "params": {"min_resource": 1, "reduction_factor": 2}},
    "space": {"optimizer.learning_rate": {"categorical": [1.0e-6, 0.05]}},
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    started = start_cluster(gpus_per_node=2)
    try:
        yield started
    finally:
        started.stop()


def _config(root: Path, experiment: str, search: dict[str, Any], **changes: Any) -> Path:
    return write_config(
        root,
        {
            "trainer.epochs": 3,
            "trainer.log_every_n_steps": 1,
            "data.params.limit": 160,
            "tracking.experiment": experiment,
            "tracking.system_metrics_every_s": 0,
            "search": search,
            **changes,
        },
        f"{experiment}.yaml",
    )


def _harness(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _journal(root: Path, name: str) -> optuna.Study:
    backend = optuna.storages.journal.JournalFileBackend(
        str(root / "searches" / name / "journal.log")
    )
    return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))


def _wait_for_a_mirrored_checkpoint_on(
    client: MlflowClient, experiment: str, node_id: str, search: subprocess.Popen[bytes]
) -> str:
    """The run of a trial training on that node once it has mirrored a checkpoint."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert search.poll() is None, search.stdout.read().decode()[-3000:]  # type: ignore[union-attr]
        found = client.get_experiment_by_name(experiment)
        runs = [] if found is None else client.search_runs(
            [found.experiment_id], filter_string="attributes.status = 'RUNNING'"
        )  # fmt: skip
        for run in runs:
            if not run.data.tags.get("harness.node", "").endswith(node_id[:8]):
                continue
            if client.list_artifacts(run.info.run_id, "checkpoint/latest"):
                return run.info.run_id
        time.sleep(0.2)
    raise AssertionError("no trial on the second node mirrored a checkpoint in 240 s")


def test_trials_run_across_both_nodes_on_their_own_gpus_and_a_lost_node_s_trial_resumes(
    cluster: Cluster, in_tmp: Path, mlflow_uri: str
) -> None:
    head, second = cluster.nodes
    config = _config(
        in_tmp,
        "ray-nodes",
        {**ASHA, "n_trials": 6, "retries": 1},
        **{
            "checkpoint.every_n_steps": 2,
            "callbacks": [
                {
                    "class_path": "tests.experiments.user_code:SlowBatches",
                    "init_args": {"seconds": 0.05},
                }
            ],
        },
    )
    command = ["search", str(config), "--launcher", "ray", "--ray-address", cluster.address]
    search = _harness(*command, "--tracking-uri", mlflow_uri, cwd=in_tmp, env=cluster.env)
    client = MlflowClient(mlflow_uri)
    lost_run = _wait_for_a_mirrored_checkpoint_on(client, "ray-nodes", second.node_id, search)
    second.kill()  # the node dies, and its disk with it:
    shutil.rmtree(second.checkpoint_root(), ignore_errors=True)
    out, _ = search.communicate(timeout=600)
    text = out.decode()
    assert search.returncode == 0, text[-4000:]

    study = _journal(in_tmp, "ray-nodes")
    trials = study.get_trials()
    assert not [t for t in trials if t.state.name == "RUNNING"]
    counted = [t for t in trials if "harness.retry_of" not in t.user_attrs]
    assert len(counted) == 6  # exactly the study's target: the retry replaces its trial
    assert {t.state.name for t in counted} <= {"COMPLETE", "PRUNED", "FAIL"}

    # The lost trial: failed at once as "node lost", retried on the head from its mirror.
    (lost,) = [t for t in trials if t.user_attrs.get("harness.run_id") == lost_run and
               t.state.name == "FAIL"]  # fmt: skip
    (retry,) = [t for t in trials if t.user_attrs.get("harness.retry_of") == lost.number]
    assert retry.state.name in ("COMPLETE", "PRUNED"), text[-3000:]
    assert retry.user_attrs["harness.run_id"] == lost_run  # one run through it all
    assert f"trial {lost.number} failed on " in text and "(node lost): retrying it" in text
    run = client.get_run(lost_run)
    assert run.info.status == "FINISHED"
    assert run.data.tags["harness.resumed_from"].startswith("step ")  # not afresh: the mirror
    assert run.data.tags["harness.node"].endswith(head.node_id[:8])
    steps = [m.step for m in client.get_metric_history(lost_run, "loss")]
    assert len(steps) == len(set(steps)), "a step logged twice across the node's loss"
    assert client.get_run(lost_run).data.tags.get("harness.exit") == "node lost"

    # Every trial a child of one parent, on the node and GPU Ray gave it.
    runs = {
        t.user_attrs["harness.run_id"]: client.get_run(t.user_attrs["harness.run_id"])
        for t in trials
        if "harness.run_id" in t.user_attrs  # (a trial lost before its run started has none)
    }
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs.values()}) == 1
    # Both nodes ran trials: the lost one on the second (where it was found above), and each
    # of the second's trials went on from where it was (resumed on the head, so tagged there).
    nodes = {r.data.tags["harness.node"].rsplit("/", 1)[1] for r in runs.values()}
    assert head.node_id[:8] in nodes and nodes <= {head.node_id[:8], second.node_id[:8]}
    for r in runs.values():
        assert r.data.tags["harness.cuda_visible_devices"] in ("0", "1")
        assert r.data.tags["harness.device"] == "gpu" + r.data.tags["harness.cuda_visible_devices"]
    spans = [
        (r.data.tags["harness.node"], r.data.tags["harness.device"], r.info.start_time,
         r.info.end_time)
        for r in runs.values() if "harness.resumed_from" not in r.data.tags  # one node each
    ]  # fmt: skip
    for i, (node, gpu, start, end) in enumerate(spans):
        for other_node, other_gpu, other_start, other_end in spans[i + 1 :]:
            overlap = start < other_end and other_start < end
            assert not (overlap and node == other_node and gpu == other_gpu)

    # The nodes were told the driver's servers, not its files.
    spec = json.loads((in_tmp / "searches" / "ray-nodes" / "trial-0000.json").read_text())
    assert spec["storage"].startswith("grpc://") and spec["tracking_uri"].startswith("http://")

    # ASHA prunes the bad learning rate.
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(t.params["optimizer.learning_rate"] == 1.0e-6 for t in pruned)


def test_ctrl_c_cancels_the_tasks_and_their_trials_stop_at_a_checkpoint(
    cluster: Cluster, in_tmp: Path, mlflow_uri: str
) -> None:
    import psutil

    slow = {"class_path": "tests.experiments.user_code:SlowBatches", "init_args": {"seconds": 0.1}}
    config = _config(
        in_tmp,
        "ray-ctrl-c",
        {**ASHA, "n_trials": 2, "pruner": "none"},
        **{"trainer.epochs": 40, "checkpoint.every_n_steps": 2, "callbacks": [slow]},
    )
    command = ["search", str(config), "--launcher", "ray", "--ray-address", cluster.address]
    search = _harness(*command, "--tracking-uri", mlflow_uri, cwd=in_tmp, env=cluster.env)
    client = MlflowClient(mlflow_uri)
    deadline = time.monotonic() + 240
    while True:  # both trials train, checkpointed
        found = client.get_experiment_by_name("ray-ctrl-c")
        runs = [] if found is None else client.search_runs([found.experiment_id])
        trained = [r for r in runs if client.list_artifacts(r.info.run_id, "checkpoint/latest")]
        if len(trained) == 2:
            break
        assert time.monotonic() < deadline and search.poll() is None
        time.sleep(0.2)
    search.send_signal(signal.SIGINT)
    out, _ = search.communicate(timeout=120)
    assert search.returncode == 130, out.decode()[-3000:]
    study = _journal(in_tmp, "ray-ctrl-c")
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "FAIL", "WAITING", "WAITING"]
    for run in trained:
        assert client.get_run(run.info.run_id).info.status == "KILLED"
        epochs = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert len(epochs) < 40  # stopped where it was, not trained to its end
    trials = [
        p for p in psutil.process_iter(["cmdline"])
        if "experiments.search.trial" in " ".join(p.info["cmdline"] or [])
        and p.status() != psutil.STATUS_ZOMBIE
    ]  # fmt: skip
    assert trials == []


def test_a_local_ray_instance_with_postgresql_storage_is_started_and_stopped(
    in_tmp: Path, mlflow_uri: str, postgres_databases: list[str]
) -> None:
    import psutil

    optuna_url, _ = postgres_databases
    config = _config(in_tmp, "ray-local", {**ASHA, "n_trials": 2}, **{"trainer.epochs": 1})
    before = {p.pid for p in psutil.process_iter()}
    command = ["search", str(config), "--launcher", "ray", "--storage", optuna_url]
    search = _harness(*command, "--tracking-uri", mlflow_uri, "--max-concurrent", "1", cwd=in_tmp)
    out, _ = search.communicate(timeout=300)
    text = out.decode()
    assert search.returncode == 0, text[-4000:]
    assert "over the Ray cluster local (1 at once, 1 CPU each)" in text
    study = optuna.load_study(study_name="ray-local", storage=optuna_url)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient(mlflow_uri)
    for trial in study.get_trials():
        tags = client.get_run(trial.user_attrs["harness.run_id"]).data.tags
        assert tags["harness.device"] == "cpu" and tags["harness.cuda_visible_devices"] == ""
        assert tags["harness.node"].startswith("127.0.0.1/")  # the instance is on loopback
    deadline = time.monotonic() + 30
    while True:  # the instance the search started is gone with it
        left = [
            p for p in psutil.process_iter(["cmdline"])
            if p.pid not in before and "ray" in " ".join(p.info["cmdline"] or [])
            and p.status() != psutil.STATUS_ZOMBIE
        ]  # fmt: skip
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert left == []


@pytest.mark.parametrize(
    ("args", "search", "expected"),
    [
        (["--ray-address", "127.0.0.1:1"], {}, "--ray-address 127.0.0.1:1: nothing answers"),
        (["--ray-address", "nowhere"], {}, "a Ray cluster's address is HOST:PORT"),
        (["--ray-address", "ray://10.0.0.5:10001"], {}, "the Ray Client address"),
        (["--devices", "0,1"], {}, "--devices 0,1: with --launcher ray, Ray places"),
        (["--ray-address", "{cluster}"], {"gpus_per_trial": 3}, "no node of the Ray cluster"),
        (["--ray-address", "{cluster}"], {"gpus_per_trial": 0, "cpus_per_trial": 0}, "both 0"),
        (["--launcher", "rai"], {}, "--launcher 'rai': trials run on this machine (local)"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_study(
    cluster: Cluster,
    in_tmp: Path,
    mlflow_uri: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    search: dict[str, Any],
    expected: str,
) -> None:
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    config = _config(
        in_tmp, "ray-bad", {**ASHA, "n_trials": 1, "launcher": {"name": "ray", **search}}
    )
    args = [arg.replace("{cluster}", cluster.address) for arg in args]
    began = time.monotonic()
    code = main(["search", str(config), *args, "--tracking-uri", mlflow_uri])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert time.monotonic() - began < 20  # not Ray's long retries
    assert not (in_tmp / "searches" / "ray-bad" / "journal.log").exists()
    assert MlflowClient(mlflow_uri).get_experiment_by_name("ray-bad") is None


def test_without_ray_installed_the_line_names_the_extra(
    in_tmp: Path,
    mlflow_uri: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.setenv(name, "")  # (what a local instance would set: restored after)
        monkeypatch.delenv(name)
    config = _config(in_tmp, "no-ray", {**ASHA, "n_trials": 1})
    assert main(["search", str(config), "--launcher", "ray", "--tracking-uri", mlflow_uri]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("install the ray extra: pip install -e '.[ray]'"), err
    assert len(err.splitlines()) == 1
    assert not (in_tmp / "searches" / "no-ray" / "journal.log").exists()
