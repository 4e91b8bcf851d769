"""ASHA against no pruning on the same space and seed, and keras-tuner's Hyperband on the same
wall-clock budget (digits CNN, up to 9 epochs a trial, val_accuracy).

1. `harness search --devices cpu:2` with `search.pruner: none`, then with
   `{name: asha, params: {min_resource: 1, reduction_factor: 3}}`: the same sampler and seed
   (`--sampler random`, the default: both draw the same candidates in the same order; `tpe`:
   the harness's default, which learns from pruned trials too); each trial is a fresh process, a
   tracked child run, its trained epochs counted from its reports to Optuna.
2. keras-tuner's Hyperband (`max_epochs=9, factor=3`) over the same space, built with this
   project's own config, data and model code (the same split, model and optimizer), given the
   ASHA search's wall-clock time end to end; trials that are running at the deadline stop there,
   and their epochs count. It runs in one process (no per-trial process start) on both cores.

    pip install -e '.[bench]'
    python -m benchmarks.search_quality --trials 24
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.search_runs import timed_search

EPOCHS = 9
BASE: dict[str, Any] = {
    "model": {
        "name": "cnn",
        "params": {
            "input_shape": [8, 8, 1],
            "num_classes": 10,
            "filters": [8, 16],
            "dense_units": 32,
        },
    },
    "data": {"name": "digits_images", "batch_size": 64, "validation_split": 0.2},
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "trainer": {"epochs": EPOCHS, "seed": 7, "progress": "none", "log_every_n_steps": 50},
    "tracking": {"experiment": "quality", "system_metrics_every_s": 0},
}
SPACE = {
    "optimizer.name": {"categorical": ["adam", "sgd"]},
    "optimizer.learning_rate": {"float": [1.0e-4, 0.3], "log": True},
    "data.batch_size": {"categorical": [32, 64, 128]},
    "model.params.dense_units": {"int": [16, 64], "step": 16},
}
PRUNERS = {
    "none": "none",
    "asha": {"name": "asha", "params": {"min_resource": 1, "reduction_factor": 3}},
}


def _search(root: Path, pruner: str, trials: int, seed: int, sampler: str) -> dict[str, float]:
    import optuna

    search = {
        "metric": "val_accuracy",
        "direction": "maximize",
        "sampler": sampler,
        "seed": seed,
        "pruner": PRUNERS[pruner],
        "space": SPACE,
    }
    config = {**BASE, "search": search}
    wall, study, _ = timed_search(root / pruner, config, slots=2, trials=trials)
    done = study.get_trials(deepcopy=False)
    return {
        "wall_s": wall,
        "trials": len(done),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in done),
        "epochs": sum(len(t.intermediate_values) for t in done),
        "best": study.best_value,
    }


def _hyperband(root: Path, budget_s: float, seed: int) -> dict[str, float]:
    import keras
    import keras_tuner as kt

    from experiments.config.schema import ExperimentConfig
    from experiments.run.prepare import prepare
    from experiments.search.space import apply

    deadline = time.monotonic() + budget_s
    epochs = [0]

    class Digits(kt.HyperModel):
        def build(self, hp: Any) -> Any:
            values = {
                "optimizer.name": hp.Choice("optimizer.name", ["adam", "sgd"]),
                "optimizer.learning_rate": hp.Float(
                    "optimizer.learning_rate", 1.0e-4, 0.3, sampling="log"
                ),
                "data.batch_size": hp.Choice("data.batch_size", [32, 64, 128]),
                "model.params.dense_units": hp.Int("model.params.dense_units", 16, 64, step=16),
            }
            config = ExperimentConfig.model_validate(apply(BASE, values))
            self.prepared = prepare(config)  # this project's data, model and optimizer
            return self.prepared.model

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            data = self.prepared.data
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), _Deadline()]
            return model.fit(
                data.train.as_dataset(EPOCHS),  # reshuffled each epoch, as in our runs
                steps_per_epoch=data.train.num_batches,
                validation_data=data.validation.dataset(0),
                verbose=0,
                **kwargs,
            )

    class _Deadline(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if time.monotonic() > deadline:
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            epochs[0] += 1

    tuner = kt.Hyperband(
        Digits(),
        objective="val_accuracy",
        max_epochs=EPOCHS,
        factor=3,
        hyperband_iterations=100,  # the deadline ends it
        seed=seed,
        directory=str(root / "keras_tuner"),
        project_name="quality",
        overwrite=True,
    )
    populate = tuner.oracle.populate_space

    def until_deadline(trial_id: str) -> dict[str, Any]:
        if time.monotonic() > deadline:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        return populate(trial_id)

    tuner.oracle.populate_space = until_deadline
    started = time.perf_counter()
    tuner.search()
    scored = [t for t in tuner.oracle.trials.values() if t.score is not None]
    return {
        "wall_s": time.perf_counter() - started,
        "trials": len(scored),
        "epochs": epochs[0],
        "best": max(t.score for t in scored),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", default="random", help="for both searches: random or tpe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        none = _search(root, "none", args.trials, args.seed, args.sampler)
        asha = _search(root, "asha", args.trials, args.seed, args.sampler)
        hyperband = _hyperband(root, asha["wall_s"], args.seed)
    results = {"no pruning": none, "ASHA": asha, "keras-tuner Hyperband": hyperband}
    for name, result in results.items():
        print(
            f"{name}: {result['trials']} trials, {result['epochs']} epochs, "
            f"best val_accuracy {result['best']:.4f}, {result['wall_s']:.0f} s"
            + (f", {result['pruned']} pruned" if "pruned" in result else "")
        )
    print(
        f"ASHA / no pruning: epochs {asha['epochs'] / none['epochs']:.2f}, "
        f"best {asha['best'] - none['best']:+.4f}; ours - Hyperband on the same "
        f"{asha['wall_s']:.0f} s: best {asha['best'] - hyperband['best']:+.4f}"
    )


if __name__ == "__main__":
    main()
