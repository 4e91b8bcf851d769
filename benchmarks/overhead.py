"""The loop's and tracking's overhead: steps/sec against plain `model.fit` on the same batches.

Same model, same data, same seed. Variants, interleaved in each repeat (rotating the order) so
drift in machine load hits all of them; medians are reported with ratios to plain fit:

- `plain_fit`: `keras.Model.fit` on the very batches the harness trains on (the harness's
  array source as one `tf.data` pipeline), no callbacks.
- `fit_untracked` / `custom_untracked`: the harness's loop with each engine, no callbacks:
  what the loop itself costs.
- `fit_tracked` / `custom_tracked`: the loop with what `harness run` attaches — MetricsLogger
  (step metrics + applied LR every `--log-every` updates, epoch metrics, throughput, flush at
  every epoch end) fanned out to an MLflow sqlite store and TensorBoard event files.

    python benchmarks/overhead.py --repeats 7 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from experiments.zoo.datasets import load_digits, load_digits_images  # noqa: E402
from experiments.zoo.models import build_cnn, build_mlp  # noqa: E402
from harness import train  # noqa: E402
from harness.callbacks import MetricsLogger  # noqa: E402
from harness.data import TrainingData, prepare_data  # noqa: E402
from harness.schedules import build_schedule  # noqa: E402
from harness.step.ema import WeightAverage  # noqa: E402
from harness.step.gradients import GradientPipeline  # noqa: E402
from tracking import FanOutSink, MlflowSink, TensorBoardSink  # noqa: E402

VARIANTS = ["plain_fit", "fit_untracked", "custom_untracked", "fit_tracked", "custom_tracked"]
# The same tracked run with a feature: an EMA of the weights (decay 0.999, every step), a
# warm-up + cosine schedule, `bare` (no gradient norm, no NaN guard: the baseline they are
# measured against), `skip` (trainer.on_nan: skip_step) or `accum` (accumulation_steps 4 of
# batches 4× smaller, per optimizer update): `--variants custom_tracked custom_tracked_ema`;
# `custom_untracked_bare` and so on: the same without the sinks (less noise from their process).
FEATURES = ("ema", "schedule", "bare", "skip", "accum")
FEATURE_VARIANTS = [
    f"{e}_{t}_{f}" for e in ("fit", "custom") for t in ("tracked", "untracked") for f in FEATURES
]


def _model(kind: str = "mlp", *, schedule: bool = False) -> keras.Model:
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


def _data(copies: int, batch_size: int, kind: str = "mlp") -> TrainingData:
    x, y = load_digits() if kind == "mlp" else load_digits_images()
    x, y = np.concatenate([x] * copies), np.concatenate([y] * copies)
    return prepare_data((x, y), batch_size=batch_size, seed=0)


def _tracked_sink(root: Path, name: str) -> FanOutSink:
    # The steady state of a long run: MLflow's work in the writer process from the start (a
    # run moves it there after its first 0.2 CPU-s of it in-thread).
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow = MlflowSink.start(uri, experiment="overhead", run_name=name, subprocess_after_cpu_s=0)
    return FanOutSink([mlflow, TensorBoardSink(root / "tb" / mlflow.run_id)])


def _wait_for_the_writer_process(sink: FanOutSink) -> None:
    """Its one-time start-up (a fresh interpreter importing MLflow) is over before timing."""
    (mlflow,) = [s for s in sink.sinks if isinstance(s, MlflowSink)]
    process = mlflow.metric_writer
    assert process is not None
    while not process.ready_now():
        time.sleep(0.05)


def _variant(
    name: str, root: Path, data: TrainingData, epochs: int, kind: str, log_every: int
) -> Callable[[], float]:
    """Return a function that trains `epochs` epochs after a warm-up and gives steps/sec."""

    ema: list[WeightAverage] = []
    gradients: list[GradientPipeline] = []

    def fit(model: keras.Model, count: int, callbacks: list[keras.callbacks.Callback]) -> None:
        if name == "plain_fit":
            model.fit(
                data.train.as_dataset(count),
                steps_per_epoch=data.train.num_batches,
                epochs=count,
                shuffle=False,  # the pipeline is shuffled
                verbose=0,
            )
        else:
            engine = name.split("_")[0]
            average = ema[0] if ema else None
            pipeline = gradients[0] if gradients else None
            train(model, data, engine=engine, epochs=count, callbacks=callbacks, ema=average,
                  gradients=pipeline)  # fmt: skip

    def run() -> float:
        callbacks, sink = [], None
        if "_tracked" in name:
            # Created before the model, as `harness run` does, so start-up overlaps set-up.
            sink = _tracked_sink(root, name)
            callbacks = [MetricsLogger(sink, log_every_n_steps=log_every)]
        model = _model(kind, schedule=name.endswith("_schedule"))
        if name.endswith("_ema"):
            ema[:] = [WeightAverage(model, decay=0.999)]
        settings = {
            "_bare": {"measure": False},
            "_skip": {"on_nan": "skip_step"},
            "_accum": {"accumulation_steps": 4},
        }
        for suffix, options in settings.items():
            if name.endswith(suffix):
                gradients[:] = [GradientPipeline(model, **options)]
        fit(model, 1, [])  # warm-up: trace the train function outside the timing
        if sink is not None:
            _wait_for_the_writer_process(sink)
        steps_before = int(model.optimizer.iterations)
        start = time.perf_counter()
        fit(model, epochs, callbacks)
        if sink is not None:
            sink.flush()  # delivery is part of the cost: wait for every metric to land
        elapsed = time.perf_counter() - start
        if sink is not None:
            sink.close()
        return (int(model.optimizer.iterations) - steps_before) / elapsed

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3)
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
    data = _data(args.copies, args.batch_size, args.model)
    # Accumulation: the same examples per update, in 4 micro-batches of a quarter the size.
    micro = (
        _data(args.copies, args.batch_size // 4, args.model)
        if any(n.endswith("_accum") for n in names)
        else data
    )
    results: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _tracked_sink(root, "create-store").close()  # store migrations outside the timing
        for repeat in range(args.repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                results[name].append(
                    _variant(
                        name,
                        root,
                        micro if name.endswith("_accum") else data,
                        args.epochs,
                        args.model,
                        args.log_every,
                    )()
                )
            print(
                f"repeat {repeat + 1}: " + ", ".join(f"{n} {results[n][-1]:.0f}" for n in names),
                flush=True,
            )
    base = statistics.median(results[names[0]])
    print(
        f"\n{args.model}, log_every_n_steps={args.log_every}: steps/sec, median of "
        f"{args.repeats} interleaved repeats "
        f"({args.epochs} epochs x {data.train.num_batches} steps, batch {args.batch_size}):"
    )
    for name in names:
        median = statistics.median(results[name])
        print(f"  {name:24s} {median:8.0f} steps/s   ratio to {names[0]} {median / base:.3f}")


if __name__ == "__main__":
    main()
