"""Resume time to the first step, against a fresh run's, for the shipped digits CNN config.

In one process (TensorFlow imported once, as `harness resume` pays it once too): a tracked run
of 1 epoch; then, alternately, a fresh run of it and a resume of that first run with one more
epoch. Each is timed from the call to the end of its first training batch (a callback), and
the resume's share spent finding its checkpoint (MLflow lookups, config check, verified load)
is shown apart. Also: the time the run spends logging its models at the end (four logged
models with `checkpoint.monitor` and EMA; each a `.keras` file, a SavedModel, signature).

    python -m benchmarks.resume --rounds 3
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import experiments.run.run  # noqa: E402
from experiments.config.loader import load_config  # noqa: E402
from experiments.run.export import log_models  # noqa: E402
from experiments.run.resume import find_resume_point  # noqa: E402
from experiments.run.run import run_experiment  # noqa: E402

FIRST_STEP: list[float] = []  # when the current run's first batch ended


class FirstStep(keras.callbacks.Callback):
    """Records when the first training batch of a run ends."""

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if not FIRST_STEP:
            FIRST_STEP.append(time.perf_counter())


def _config(root: Path, epochs: int, extra: list[str] | None = None) -> Any:
    return load_config(
        "experiments/configs/digits_cnn.yaml",
        [
            f"trainer.epochs={epochs}",
            "trainer.progress=none",
            "tracking.system_metrics_every_s=0",
            f"tracking.tensorboard_dir={root / 'tb'}",
            f"checkpoint.dir={root / 'ckpt'}/{{run_id}}",
            "callbacks=[{class_path: benchmarks.resume:FirstStep}]",
            *(extra or []),
        ],
    )


def _to_first_step(start: float, call: Any) -> tuple[float, Any]:
    # The config's callback is `benchmarks.resume:FirstStep`: this file imported as a module,
    # not the `__main__` that `python -m` runs, so read its list.
    first_step = importlib.import_module("benchmarks.resume").FIRST_STEP
    first_step.clear()
    result = call()
    return first_step[0] - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        first = run_experiment(_config(root, 1), tracking_uri=uri)
        fresh, resumed, finding, logging_models = [], [], [], []
        for round_index in range(args.rounds):
            fresh_config = _config(root, 1)
            start = time.perf_counter()
            took, _ = _to_first_step(
                start,
                lambda: run_experiment(fresh_config, tracking_uri=uri),  # noqa: B023
            )
            fresh.append(took)

            start = time.perf_counter()
            config, point = find_resume_point(
                first.run_id, uri, [f"trainer.epochs={2 + round_index}"]
            )
            found = time.perf_counter()
            took, _ = _to_first_step(
                start,
                lambda: run_experiment(config, tracking_uri=uri, resume=point),  # noqa: B023
            )
            resumed.append(took)
            finding.append(found - start)

            monitored = _config(root, 1, ["checkpoint.monitor=val_loss", "ema={decay: 0.99}"])
            spent: list[float] = []

            def timed(*arguments: Any) -> None:
                began = time.perf_counter()
                log_models(*arguments)
                spent.append(time.perf_counter() - began)  # noqa: B023

            with mock.patch.object(experiments.run.run, "log_models", timed):
                run_experiment(monitored, tracking_uri=uri)
            logging_models.append(spent[0])

    def median_ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} ms"

    print(f"fresh run, call to first step:        {median_ms(fresh)}  ({args.rounds} rounds)")
    print(f"resume, call to first step:           {median_ms(resumed)}")
    print(f"  of which finding the checkpoint:    {median_ms(finding)}")
    print(f"logging 4 models (last, best, EMA):   {median_ms(logging_models)}")


if __name__ == "__main__":
    main()
