"""Trials per hour with 1 and with 2 CPU slots, and the supervisor's overhead per trial.

The same small search (digits MLP, 2 epochs, a random sampler, no pruning) run as two fresh
studies one after the other, `--devices cpu:1` then `--devices cpu:2`, each in its own
journal file and MLflow store. Trials per hour are counted over the trials' span, from the
first trial's start to the last one's end: the search's own start (the study, the parent run)
and end (the last plots, registering the best model) come once a search, not once a trial;
the whole search's ratio is printed beside it. The overhead per trial is the time from the
Optuna trial's start (the supervisor asks for it and starts its process) to the first training
step its run logged: a fresh Python process, TensorFlow's import, the data, the model and the
step's trace.

    python -m benchmarks.search_slots --trials 12
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


def _search(root: Path, slots: int, trials: int) -> tuple[float, float, list[float]]:
    """The search's wall time, its trials' span (the first trial's start to the last trial's
    end: what the slots do, without the search's own start and end), and each trial's
    start-to-first-step time."""
    from experiments.tracking_setup import tracking_store

    wall, study, uri = timed_search(root / f"slots-{slots}", CONFIG, slots=slots, trials=trials)
    runs = tracking_store(uri)
    finished = study.get_trials()
    span = max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)
    overheads = []
    for trial in finished:
        run_id = trial.user_attrs["harness.run_id"]
        first = min(m.timestamp for m in runs.metric_history(run_id, "step/batch_loss"))
        overheads.append(first / 1000 - trial.datetime_start.timestamp())
    return wall, span.total_seconds(), overheads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {slots: _search(Path(tmp), slots, args.trials) for slots in (1, 2)}
    for slots, (wall, span, overheads) in results.items():
        print(
            f"cpu:{slots}: {args.trials} trials in {wall:.0f} s, the trials themselves "
            f"{span:.0f} s = {args.trials / span * 3600:.0f} trials/hour; trial start to first "
            f"step: median {statistics.median(overheads):.1f} s"
        )
    trials_only, whole = results[1][1] / results[2][1], results[1][0] / results[2][0]
    print(f"speed-up 2 slots / 1 slot: {trials_only:.2f}x (the whole search: {whole:.2f}x)")


if __name__ == "__main__":
    main()
