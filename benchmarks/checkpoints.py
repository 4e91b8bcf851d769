"""Checkpoint cost: size, write time, the training thread's stall per save, and the time to
load and restore one, for the digits CNN and a ~50 MB MLP (Adam: weights + 2 slots).

The stall is what the training thread spends per save: reading every state part (tensors,
not yet copied out, as the loop's checkpointing does) and handing them to the writer thread.
Copying out, pickling, writing, fsync and retention run on the writer thread ("write").

    python benchmarks/checkpoints.py --saves 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from experiments.zoo.datasets import load_digits, load_digits_images  # noqa: E402
from experiments.zoo.models import build_cnn, build_mlp  # noqa: E402
from harness import TrainingLoop  # noqa: E402
from harness.checkpoints import CheckpointStore  # noqa: E402
from harness.data import prepare_data  # noqa: E402


def _loop(kind: str) -> TrainingLoop:
    keras.utils.set_random_seed(0)
    if kind == "cnn":
        model = build_cnn(input_shape=(8, 8, 1))
        x, y = load_digits_images()
    else:  # 64 -> 3500 -> 3500 -> 10: 12.5 M weights, 50 MB in float32
        model = build_mlp(input_shape=(64,), hidden_units=(3500, 3500))
        x, y = load_digits()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = prepare_data((x[:512], y[:512]), batch_size=64, seed=0)
    loop = TrainingLoop(model, data, engine="custom", epochs=1)
    loop.run()  # optimizer slots exist, functions traced
    return loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=5)
    args = parser.parse_args()
    for kind in ("cnn", "mlp-50mb"):
        loop = _loop("cnn" if kind == "cnn" else "mlp")
        weights_mb = sum(v.numpy().nbytes for v in loop.model.weights) / 2**20
        with tempfile.TemporaryDirectory() as tmp:
            store = CheckpointStore(Path(tmp), keep_last=2)
            stalls = []
            for index in range(args.saves):
                start = time.perf_counter()
                store.save(loop.capture_state(snapshot=True), step=index, epoch=1, batch=0)
                stalls.append(time.perf_counter() - start)
                store.wait()
            latest = store.checkpoints()[-1].path
            size_mb = sum(f.stat().st_size for f in latest.iterdir()) / 2**20
            fresh = _loop("cnn" if kind == "cnn" else "mlp")
            start = time.perf_counter()
            _, state = store.load_latest()  # type: ignore[misc]
            fresh.state.restore(state)
            restore_s = time.perf_counter() - start
        stall, write = statistics.median(stalls), statistics.median(store.write_s)
        print(
            f"{kind:9s} weights {weights_mb:6.1f} MB, checkpoint {size_mb:6.1f} MB: "
            f"write {write * 1e3:7.1f} ms (writer thread), training-thread stall "
            f"{stall * 1e3:6.1f} ms ({stall / write:.0%} of the write), load + restore "
            f"{restore_s * 1e3:7.1f} ms (median of {args.saves} saves)",
            flush=True,
        )


if __name__ == "__main__":
    main()
