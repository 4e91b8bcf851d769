"""Per-step cost of the batch values the compiled train step returns (`step/batch_*`).

The same digits MLP, the same batches, the same compiled train call, with and without the
batch values (the change of each metric's state over the step), interleaved in each repeat.
Reported: microseconds per step and the ratio of steps/sec.

    python benchmarks/step_values.py --repeats 9 --steps 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from experiments.zoo.datasets import load_digits  # noqa: E402
from experiments.zoo.models import build_mlp  # noqa: E402
from harness.step import compiled  # noqa: E402
from harness.step.engines import get_engine  # noqa: E402


def _train_call(engine: str, batch_values: bool):
    keras.utils.set_random_seed(0)
    model = build_mlp(input_shape=[64], num_classes=10, hidden_units=[128, 64], dropout=0.1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = load_digits()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True).repeat()
    from harness import keras_internals

    keras_internals.symbolic_build(model, dataset.element_spec)
    original = compiled._batch_values
    if not batch_values:
        compiled._batch_values = lambda model, before, logs: logs  # type: ignore[assignment]
    try:
        function = compiled.build_train_function(model, get_engine(engine).train_step(model))
    finally:
        compiled._batch_values = original
    return function, iter(dataset)


def _time(function, iterator, steps: int) -> float:
    for _ in range(20):  # trace and warm up
        function(iterator)
    start = time.perf_counter()
    for _ in range(steps):
        logs, outputs = function(iterator)
    np.asarray(outputs.iterations)  # wait for the last step
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    for engine in ("fit", "custom"):
        calls = {flag: _train_call(engine, flag) for flag in (False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.repeats):
            for flag in (False, True) if repeat % 2 else (True, False):
                times[flag].append(_time(*calls[flag], args.steps))
        without, with_values = (statistics.median(times[f]) for f in (False, True))
        print(
            f"engine {engine}: {without * 1e6:.0f} µs/step without, {with_values * 1e6:.0f} µs "
            f"with batch values (+{(with_values - without) * 1e6:.1f} µs, steps/sec ratio "
            f"{without / with_values:.3f}); median of {args.repeats}"
        )


if __name__ == "__main__":
    main()
