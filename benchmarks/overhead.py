"""Tracking overhead: steps/sec of plain `fit`, tracked `fit` and the tracked custom engine.

Same model, same data, same seed. "Tracked" means everything `harness run` attaches while
training: MetricsLogger at `log_every_n_steps=1` (step metrics + applied LR every step, epoch
metrics, throughput, flush at every epoch end) fanned out to an MLflow sqlite store and
TensorBoard event files. Variants are interleaved in each repeat (rotating the order) so drift
in machine load hits all of them; medians are reported with ratios to plain fit.

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

from experiments.datasets import load_digits, load_digits_images  # noqa: E402
from experiments.models import build_cnn, build_mlp  # noqa: E402
from harness.callbacks import MetricsLogger  # noqa: E402
from harness.custom_engine import CustomEngine  # noqa: E402
from harness.data import prepare_data  # noqa: E402
from tracking import FanOutSink, MlflowSink, TensorBoardSink  # noqa: E402


def _model(kind: str = "mlp") -> keras.Model:
    keras.utils.set_random_seed(0)
    if kind == "mlp":
        model = build_mlp(input_shape=(64,), hidden_units=(128, 64))
    else:
        model = build_cnn(input_shape=(8, 8, 1), filters=(16, 32), dense_units=64)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(copies: int, batch_size: int, kind: str = "mlp"):
    x, y = load_digits() if kind == "mlp" else load_digits_images()
    x, y = np.concatenate([x] * copies), np.concatenate([y] * copies)
    return prepare_data((x, y), batch_size=batch_size, seed=0).train


def _tracked_sink(root: Path, name: str) -> FanOutSink:
    mlflow = MlflowSink.start(f"sqlite:///{root}/mlflow.db", experiment="overhead", run_name=name)
    return FanOutSink([mlflow, TensorBoardSink(root / "tb" / mlflow.run_id)])


def _variant(
    name: str, root: Path, data, epochs: int, kind: str, log_every: int
) -> Callable[[], float]:
    """Return a function that trains `epochs` epochs after a warm-up and gives steps/sec."""

    def run() -> float:
        callbacks, sink = [], None
        if name != "plain_fit":
            # Created before the model, as `harness run` does, so start-up overlaps set-up.
            sink = _tracked_sink(root, name)
            callbacks = [MetricsLogger(sink, log_every_n_steps=log_every)]
        model = _model(kind)
        engine = CustomEngine(model) if name == "custom_tracked" else None
        fit = engine.fit if engine else (lambda x, **kw: model.fit(x, verbose=0, **kw))
        fit(data, epochs=1)  # warm-up: trace the train function outside the timing
        if sink is not None:
            # Steady state: the writer process's one-time start-up (importing MLflow, ~2 s of
            # CPU) is over before timing, as it is when `harness run` starts training.
            sink.log_metrics({"benchmark/ready": 0.0}, step=0)
            sink.flush()
        steps_before = int(model.optimizer.iterations)
        start = time.perf_counter()
        fit(data, epochs=epochs, callbacks=callbacks)
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
    parser.add_argument("--log-every", type=int, default=1, help="log_every_n_steps")
    parser.add_argument(
        "--model",
        choices=["mlp", "cnn"],
        default="mlp",
        help="mlp: digits_mlp.yaml's model; cnn: digits_cnn.yaml's model",
    )
    args = parser.parse_args()
    names = ["plain_fit", "fit_tracked", "custom_tracked"]
    data = _data(args.copies, args.batch_size, args.model)
    results: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _tracked_sink(root, "create-store").close()  # store migrations outside the timing
        for repeat in range(args.repeats):
            order = names[repeat % 3 :] + names[: repeat % 3]
            for name in order:
                results[name].append(
                    _variant(name, root, data, args.epochs, args.model, args.log_every)()
                )
            print(
                f"repeat {repeat + 1}: " + ", ".join(f"{n} {results[n][-1]:.0f}" for n in names),
                flush=True,
            )
    base = statistics.median(results["plain_fit"])
    print(
        f"\n{args.model}, log_every_n_steps={args.log_every}: steps/sec, median of "
        f"{args.repeats} interleaved repeats "
        f"({args.epochs} epochs x {len(data)} steps, batch {args.batch_size}):"
    )
    for name in names:
        median = statistics.median(results[name])
        print(f"  {name:15s} {median:8.0f} steps/s   ratio to plain fit {median / base:.3f}")


if __name__ == "__main__":
    main()
