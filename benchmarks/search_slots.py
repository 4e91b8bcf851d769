"""Trials per hour with 1 and with 2 CPU slots, and the supervisor's overhead per trial.

The same small search (digits MLP, 2 epochs, a random sampler, no pruning) run as two fresh
studies one after the other, `--devices cpu:1` then `--devices cpu:2`, each in its own
journal file and MLflow store. The overhead per trial is the time from the Optuna trial's
start (the supervisor asks for it and starts its process) to the first training step its run
logged: a fresh Python process, TensorFlow's import, the data, the model and the step's trace.

    python -m benchmarks.search_slots --trials 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.search_runs import timed_search

CONFIG = {
    "model": {"name": "mlp", "params": {"input_shape": [64], "hidden_units": [32]}},
    "data": {"name": "digits", "params": {"limit": 600}, "batch_size": 32, "validation_split": 0.2},
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "trainer": {"epochs": 2, "seed": 0, "progress": "none", "log_every_n_steps": 4},
    "tracking": {"experiment": "slots", "system_metrics_every_s": 0},
    "search": {
        "metric": "val_accuracy",
        "direction": "maximize",
        "sampler": "random",
        "seed": 0,
        "space": {"optimizer.learning_rate": {"float": [0.001, 0.1], "log": True}},
    },
}


def _search(root: Path, slots: int, trials: int) -> tuple[float, list[float]]:
    from mlflow.tracking import MlflowClient

    wall, study, uri = timed_search(root / f"slots-{slots}", CONFIG, slots=slots, trials=trials)
    client = MlflowClient(uri)
    overheads = []
    for trial in study.get_trials():
        run_id = trial.user_attrs["harness.run_id"]
        first = min(m.timestamp for m in client.get_metric_history(run_id, "step/batch_loss"))
        overheads.append(first / 1000 - trial.datetime_start.timestamp())
    return wall, overheads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {slots: _search(Path(tmp), slots, args.trials) for slots in (1, 2)}
    for slots, (wall, overheads) in results.items():
        print(
            f"cpu:{slots}: {args.trials} trials in {wall:.0f} s = "
            f"{args.trials / wall * 3600:.0f} trials/hour; trial start to first step: median "
            f"{statistics.median(overheads):.1f} s"
        )
    print(f"speed-up 2 slots / 1 slot: {results[1][0] / results[2][0]:.2f}x")


if __name__ == "__main__":
    main()
