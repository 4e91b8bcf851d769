"""The loop's and tracking's overhead: steps/sec against plain `model.fit` and a bare loop.

Same model, same data, same seed. Each variant trains a fresh model for `1 + --epochs` epochs
in one call; variants are interleaved in each repeat (rotating the order) so drift in machine
load hits all of them, and medians are reported with ratios to the first variant:

- steady state: optimizer updates per second over the epochs after the first (the trace, the
  writer process's start-up and the first epoch's warm-up excluded; for tracked variants the
  wait for every point to land is included);
- fixed cost: the seconds a fresh model's first epoch takes (its trace included).

Variants:
- `plain_fit`: `keras.Model.fit` on the very batches the harness trains on (the harness's
  array source as one `tf.data` pipeline), no callbacks.
- `bare_loop`: the limit — a `tf.function` GradientTape step over the same prefetched
  `tf.data` pipeline, with Keras's loss mean and accuracy metrics, in a Python `for` loop.
- `fit_untracked` / `custom_untracked`: the harness's loop with each engine, no callbacks.
- `fit_tracked` / `custom_tracked`: the loop with what `harness run` attaches — MetricsLogger
  (step metrics + applied LR every `--log-every` updates, 10 as in `harness run`, epoch
  metrics, throughput) fanned out to an MLflow sqlite store and TensorBoard event files;
  `fit_tracked_every` / `custom_tracked_every`: the same logging every update.
- Features (`--variants custom_tracked custom_tracked_ema`): an EMA of the weights (`ema`,
  decay 0.999), a warm-up + cosine schedule (`schedule`), no gradient norm and no NaN guard
  (`bare`), `on_nan: skip_step` (`skip`), accumulation of 4 micro-batches 4x smaller
  (`accum`); `_untracked_<feature>` the same without the sinks.

    python -m benchmarks.overhead --repeats 5 --epochs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from experiments.zoo.datasets import load_digits, load_digits_images  # noqa: E402
from experiments.zoo.models import build_cnn, build_mlp  # noqa: E402
from harness import train  # noqa: E402
from harness.callbacks import MetricsLogger  # noqa: E402
from harness.data import TrainingData, prepare_data  # noqa: E402
from harness.schedules import build_schedule  # noqa: E402
from harness.step.ema import WeightAverage  # noqa: E402
from harness.step.gradients import GradientPipeline  # noqa: E402
from tracking import FanOutSink, MlflowSink, TensorBoardSink  # noqa: E402

VARIANTS = [
    "plain_fit",
    "bare_loop",
    "fit_untracked",
    "custom_untracked",
    "fit_tracked",
    "custom_tracked",
    "fit_tracked_every",
    "custom_tracked_every",
]
FEATURES = ("ema", "schedule", "bare", "skip", "accum")
FEATURE_VARIANTS = [
    f"{e}_{t}_{f}" for e in ("fit", "custom") for t in ("tracked", "untracked") for f in FEATURES
]


@dataclass
class Timing:
    """One variant's repeat: steady-state updates per second and the first epoch's seconds."""

    steps_per_sec: float
    first_epoch_s: float


class Clock(keras.callbacks.Callback):
    """When each epoch ended and the optimizer's step then (no per-batch hooks)."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.start = start
        self.marks: list[tuple[float, int]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.marks.append((time.perf_counter(), int(self.model.optimizer.iterations.numpy())))


def build_model(kind: str = "mlp", *, schedule: bool = False) -> keras.Model:
    keras.utils.set_random_seed(0)
    if kind == "mlp":
        model = build_mlp(input_shape=(64,), hidden_units=(128, 64))
    else:
        model = build_cnn(input_shape=(8, 8, 1), filters=(16, 32), dense_units=64)
    rate = build_schedule("cosine", 0.003, warmup_steps=100, decay_steps=2000) if schedule else 1e-3
    model.compile(
        optimizer=keras.optimizers.Adam(rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def digits_data(copies: int, batch_size: int, kind: str = "mlp") -> TrainingData:
    x, y = load_digits() if kind == "mlp" else load_digits_images()
    x, y = np.concatenate([x] * copies), np.concatenate([y] * copies)
    return prepare_data((x, y), batch_size=batch_size, seed=0)


def tracked_sink(root: Path, name: str) -> FanOutSink:
    # The steady state of a long run: MLflow's work in the writer process from the start (a
    # run moves it there after its first 0.2 CPU-s of it in-thread).
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow = MlflowSink.start(uri, experiment="overhead", run_name=name, subprocess_after_cpu_s=0)
    return FanOutSink([mlflow, TensorBoardSink(root / "tb" / mlflow.run_id)])


def wait_for_the_writer_process(sink: FanOutSink) -> None:
    """Its one-time start-up (a fresh interpreter importing MLflow) is over before timing."""
    (mlflow,) = [s for s in sink.sinks if isinstance(s, MlflowSink)]
    process = mlflow.metric_writer
    assert process is not None
    while not process.ready_now():
        time.sleep(0.05)


def bare_loop(model: keras.Model, data: TrainingData, epochs: int, clock: Clock) -> None:
    """The limit a loop can reach: a compiled GradientTape step over a prefetched pipeline,
    Keras's loss mean and accuracy kept, nothing else."""
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    loss_mean, accuracy = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()
    optimizer = model.optimizer
    clock.set_model(model)

    @tf.function
    def step(x: Any, y: Any) -> None:
        with tf.GradientTape() as tape:
            predictions = model(x, training=True)
            loss = loss_fn(y, predictions)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        loss_mean.update_state(loss)
        accuracy.update_state(y, predictions)

    dataset = data.train.as_dataset(epochs)
    iterator = iter(dataset)
    for epoch in range(epochs):
        loss_mean.reset_state()
        accuracy.reset_state()
        for _ in range(data.train.num_batches):
            x, y = next(iterator)[:2]
            step(x, y)
        float(loss_mean.result())  # the epoch's logs read, as fit() does
        clock.on_epoch_end(epoch)


def _variant(
    name: str, root: Path, data: TrainingData, epochs: int, kind: str, log_every: int
) -> Callable[[], Timing]:
    """A function that trains a fresh model `1 + epochs` epochs and times it."""

    def run() -> Timing:
        callbacks: list[keras.callbacks.Callback] = []
        sink = None
        if "_tracked" in name:
            # Created before the model, as `harness run` does, so start-up overlaps set-up.
            sink = tracked_sink(root, name)
            every = 1 if "_every" in name else log_every
            callbacks = [MetricsLogger(sink, log_every_n_steps=every)]
        model = build_model(kind, schedule=name.endswith("_schedule"))
        ema = WeightAverage(model, decay=0.999) if name.endswith("_ema") else None
        options = {
            "_bare": {"measure": False},
            "_skip": {"on_nan": "skip_step"},
            "_accum": {"accumulation_steps": 4},
        }
        pipeline = next(
            (GradientPipeline(model, **o) for s, o in options.items() if name.endswith(s)), None
        )
        if sink is not None:
            wait_for_the_writer_process(sink)
        start = time.perf_counter()
        clock = Clock(start)
        total = 1 + epochs
        if name == "plain_fit":
            model.fit(
                data.train.as_dataset(total),
                steps_per_epoch=data.train.num_batches,
                epochs=total,
                shuffle=False,  # the pipeline is shuffled
                verbose=0,
                callbacks=[clock],
            )
        elif name == "bare_loop":
            bare_loop(model, data, total, clock)
        else:
            engine = name.split("_")[0]
            train(model, data, engine=engine, epochs=total, callbacks=[clock, *callbacks],
                  ema=ema, gradients=pipeline)  # fmt: skip
        end = time.perf_counter()  # train() waited for every point to land (on_train_end)
        if sink is not None:
            sink.close()
        (first_end, first_step), steps = clock.marks[0], int(model.optimizer.iterations.numpy())
        return Timing((steps - first_step) / (end - first_end), first_end - start)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs after the first")
    parser.add_argument("--copies", type=int, default=4, help="digits copies (1,797 each)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--log-every", type=int, default=10, help="log_every_n_steps")
    parser.add_argument(
        "--model",
        choices=["mlp", "cnn"],
        default="mlp",
        help="mlp: digits_mlp.yaml's model; cnn: digits_cnn.yaml's model",
    )
    parser.add_argument(
        "--variants", nargs="+", choices=VARIANTS + FEATURE_VARIANTS, default=VARIANTS
    )
    args = parser.parse_args()
    names = args.variants
    data = digits_data(args.copies, args.batch_size, args.model)
    # Accumulation: the same examples per update, in 4 micro-batches of a quarter the size.
    micro = (
        digits_data(args.copies, args.batch_size // 4, args.model)
        if any(n.endswith("_accum") for n in names)
        else data
    )
    results: dict[str, list[Timing]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tracked_sink(root, "create-store").close()  # store migrations outside the timing
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                source = micro if name.endswith("_accum") else data
                timing = _variant(name, root, source, args.epochs, args.model, args.log_every)()
                results[name].append(timing)
            print(
                f"repeat {repeat + 1}: "
                + ", ".join(f"{n} {results[n][-1].steps_per_sec:.0f}" for n in names),
                flush=True,
            )
    _report(args, names, results, data.train.num_batches)


def _report(
    args: argparse.Namespace, names: list[str], results: dict[str, list[Timing]], batches: int
) -> None:
    speed = {n: statistics.median(t.steps_per_sec for t in results[n]) for n in names}
    first = {n: statistics.median(t.first_epoch_s for t in results[n]) for n in names}
    bare = speed.get("bare_loop")
    print(
        f"\n{args.model}, batch {args.batch_size}, log_every_n_steps={args.log_every} "
        f"(`_every`: 1): medians of {args.repeats} interleaved repeats; steady state = "
        f"epochs 2-{1 + args.epochs} of one call ({batches} updates each); fixed cost = "
        "a fresh model's first epoch, trace included"
    )
    header = f"  {'variant':24s} {'steps/s':>8s} {'x ' + names[0]:>14s}"
    header += f" {'x bare_loop':>12s}" if bare else ""
    print(header + f" {'1st epoch s':>12s}")
    for name in names:
        line = f"  {name:24s} {speed[name]:8.0f} {speed[name] / speed[names[0]]:14.3f}"
        line += f" {speed[name] / bare:12.3f}" if bare else ""
        print(line + f" {first[name]:12.2f}")


if __name__ == "__main__":
    main()
