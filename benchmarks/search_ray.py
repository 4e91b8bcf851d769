"""The Ray launcher against the local one, and against Ray Tune's own Optuna integration.

1. The same small search (digits MLP, 2 epochs, a random sampler, no pruning), `--devices
   cpu:2` on this machine, then `--launcher ray` on a two-node Ray cluster on loopback (1 CPU
   each, so 2 trials at once too). Trials per hour over the trials' span, and the launcher's
   own overhead per trial: the time from the Optuna trial's start (the supervisor asks for it
   and launches it) to its process's start (recorded by the process itself), whose
   difference between the two launchers is what Ray's placement and the watching task add.
2. The same space and budget (N trials of E epochs, ASHA with reduction factor 2) through
   `harness search --launcher ray` and through Ray Tune (`OptunaSearch` + `ASHAScheduler`, its
   trainable training the same config with the same harness, 2 trials at once): the best value,
   the trials run and stopped early, and what each did with an early-stopped trial.

    python -m benchmarks.search_ray --trials 8 --tune-trials 12
(needs the ray and bench extras: pip install -e '.[ray,bench]')
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.search_runs import timed_search
from benchmarks.search_slots import CONFIG
from tests.experiments.search.launch.ray_nodes import start_cluster
from tests.paths import ROOT

SPACE = {"optimizer.learning_rate": {"float": [1.0e-5, 0.1], "log": True}}
EPOCHS = 4


def _clock_offset() -> float:
    """How far a process's start time as the kernel reports it (psutil, counted from the boot
    time in whole ticks) lies from `time.time()` when it was started: measured on a process
    started here, and taken off the trials' process start times."""
    import subprocess

    import psutil

    offsets = []
    for _ in range(5):
        before = time.time()
        child = subprocess.Popen(["sleep", "0.2"])
        offsets.append(psutil.Process(child.pid).create_time() - before)
        child.wait()
    return statistics.median(offsets)


def _launch_latencies(study: Any, offset: float) -> list[float]:
    """Each trial's Optuna start to its process's start (`host:pid:start` it recorded)."""
    return [
        float(t.user_attrs["harness.trial_process"].rsplit(":", 1)[1])
        - offset
        - t.datetime_start.timestamp()
        for t in study.get_trials()
    ]


def _span(study: Any) -> float:
    trials = study.get_trials()
    end = max(t.datetime_complete for t in trials)
    return (end - min(t.datetime_start for t in trials)).total_seconds()


def launchers(root: Path, trials: int) -> None:
    config = copy.deepcopy(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = {}
    config["tracking"]["experiment"] = "local"
    results["local --devices cpu:2"] = timed_search(root / "local", config, slots=2, trials=trials)
    cluster = start_cluster(gpus_per_node=0)
    try:
        config["tracking"]["experiment"] = "ray"
        where = ["--launcher", "ray", "--ray-address", cluster.address]
        results["ray, 2 nodes x 1 CPU"] = timed_search(
            root / "ray", config, slots=2, trials=trials, where=where, env=env | cluster.env
        )
    finally:
        cluster.stop()
    medians, offset = {}, _clock_offset()
    for name, (wall, study, _) in results.items():
        latencies = _launch_latencies(study, offset)
        medians[name] = statistics.median(latencies)
        print(
            f"{name}: {trials} trials in {wall:.0f} s, the trials themselves {_span(study):.0f} s"
            f" = {trials / _span(study) * 3600:.0f} trials/hour; trial start to its process's "
            f"start: median {medians[name]:.3f} s (max {max(latencies):.3f} s)"
        )
    local, ray = medians.values()
    print(f"the Ray launcher's own overhead per trial (median): {ray - local:.3f} s")


def _budget_config(name: str) -> dict[str, Any]:
    config = copy.deepcopy(CONFIG)
    config["tracking"]["experiment"] = name
    config["trainer"]["epochs"] = EPOCHS
    config["search"] |= {
        "sampler": "tpe",
        "space": SPACE,
        "pruner": {"name": "asha", "params": {"min_resource": 1, "reduction_factor": 2}},
    }
    return config


def ours(root: Path, trials: int) -> None:
    wall, study, _ = timed_search(
        root / "ours", _budget_config("ours"), slots=2, trials=trials,
        where=["--launcher", "ray", "--max-concurrent", "2"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    states = [t.state.name for t in study.get_trials()]
    print(
        f"harness search --launcher ray (TPE + ASHA): best val_accuracy {study.best_value:.4f} "
        f"in {wall:.0f} s; {len(states)} trials: {states.count('COMPLETE')} complete, "
        f"{states.count('PRUNED')} pruned (PRUNED in the study, with their epochs' values: "
        "TPE learns from them as pruned)"
    )


def tune(root: Path, trials: int) -> None:
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    uri = f"sqlite:///{root / 'tune-mlflow.db'}"
    base = _budget_config("tune")
    base.pop("search")

    def trainable(params: dict[str, float]) -> None:
        import keras

        from experiments.config.schema import ExperimentConfig
        from experiments.run.run import run_experiment
        from experiments.search.space import apply

        class Report(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                ray_tune.report({"val_accuracy": float((logs or {})["val_accuracy"])})

        config = ExperimentConfig.model_validate(apply(base, params))
        run_experiment(config, tracking_uri=uri, extra_callbacks=[Report()])

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        started = time.perf_counter()
        tuner = ray_tune.Tuner(
            ray_tune.with_resources(trainable, {"cpu": 1}),
            param_space={"optimizer.learning_rate": ray_tune.loguniform(1.0e-5, 0.1)},
            tune_config=ray_tune.TuneConfig(
                metric="val_accuracy",
                mode="max",
                num_samples=trials,
                search_alg=OptunaSearch(seed=0),
                scheduler=ASHAScheduler(max_t=EPOCHS, grace_period=1, reduction_factor=2),
            ),
            run_config=ray_tune.RunConfig(storage_path=str(root / "tune"), verbose=0),
        )
        results = tuner.fit()
        wall = time.perf_counter() - started
    finally:
        ray.shutdown()
    frame = results.get_dataframe()
    stopped = int((frame["training_iteration"] < EPOCHS).sum())
    best = results.get_best_result(scope="all").metrics["val_accuracy"]
    print(
        f"Ray Tune (OptunaSearch TPE + ASHAScheduler): best val_accuracy {best:.4f} in "
        f"{wall:.0f} s; {len(frame)} trials, {stopped} stopped early (told to Optuna as "
        "COMPLETE with their last epoch's value: OptunaSearch's sampler has no pruner)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--tune-trials", type=int, default=12)
    parser.add_argument("--only", choices=("launchers", "tune"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "launchers"):
            launchers(Path(tmp), args.trials)
        if args.only in (None, "tune"):
            ours(Path(tmp), args.tune_trials)
            tune(Path(tmp), args.tune_trials)


if __name__ == "__main__":
    main()
