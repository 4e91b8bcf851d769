"""What the gradient pipeline costs per optimizer update, per engine, on the digits CNN.

Variants, each its own model (same seed) and `GradientPipeline`, trained one epoch at a time
in interleaved blocks (rotating the order each round) so this VM's drifting load hits all of
them alike; the traced step is reused between blocks. Reported: the median seconds per update
over the rounds, the median of the per-round ratios to `bare`, and the ratio of the fastest
rounds (timeit's rule: on a shared VM the least-disturbed round is the truest cost), and the
ratio of the median CPU time per update (all threads; time stolen by the hypervisor is not in
it):

- `bare`: no gradient norm, no NaN guard (`GradientPipeline(measure=False)`), the baseline.
- `norm`: the default: the global norm logged as `step/grad_norm`, and the NaN guard
  (`on_nan: raise`) built on that same norm.
- `skip`: the norm with `on_nan: skip_step`.
- `accum`: `accumulation_steps: 4` on batches a quarter the size (the same examples per
  update), against `norm` on the full batch.

    python benchmarks/gradient_pipeline.py --rounds 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from experiments.zoo.datasets import load_digits_images  # noqa: E402
from experiments.zoo.models import build_cnn  # noqa: E402
from harness import train  # noqa: E402
from harness.data import prepare_data  # noqa: E402
from harness.step.gradients import GradientPipeline  # noqa: E402

VARIANTS = {
    "bare": ({"measure": False}, 1),
    "norm": ({}, 1),
    "skip": ({"on_nan": "skip_step"}, 1),
    "accum": ({"accumulation_steps": 4}, 4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--copies", type=int, default=2, help="digits copies (1,797 each)")
    parser.add_argument("--engines", nargs="+", default=["custom", "fit"])
    args = parser.parse_args()
    x, y = load_digits_images()
    x, y = np.concatenate([x] * args.copies), np.concatenate([y] * args.copies)
    for engine in args.engines:
        runs = {}
        for name, (options, k) in VARIANTS.items():
            keras.utils.set_random_seed(0)
            model = build_cnn(input_shape=(8, 8, 1), filters=(16, 32), dense_units=64)
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
            )
            data = prepare_data((x, y), batch_size=args.batch_size // k, seed=0)
            pipeline = GradientPipeline(model, **options)
            train(model, data, engine=engine, epochs=1, gradients=pipeline)  # trace, warm up
            runs[name] = (model, data, pipeline)
        per_update: dict[str, list[float]] = {name: [] for name in runs}
        cpu_per_update: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for index in range(args.rounds):
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                model, data, pipeline = runs[name]
                before = int(model.optimizer.iterations.numpy())
                start, cpu_start = time.perf_counter(), time.process_time()
                train(model, data, engine=engine, epochs=1, gradients=pipeline)
                elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                updates = int(model.optimizer.iterations.numpy()) - before
                per_update[name].append(elapsed / updates)
                cpu_per_update[name].append(cpu / updates)
        print(f"\n{engine}: digits CNN, batch {args.batch_size}, {args.rounds} interleaved rounds")
        for name in names:
            against = "norm" if name == "accum" else "bare"
            ratios = [a / b for a, b in zip(per_update[name], per_update[against], strict=True)]
            fastest = min(per_update[name]) / min(per_update[against])
            cpu = statistics.median(cpu_per_update[name]) / statistics.median(
                cpu_per_update[against]
            )
            print(
                f"  {name:6s} {statistics.median(per_update[name]) * 1e3:7.3f} ms/update   "
                f"to {against}: median per-round ratio {statistics.median(ratios):.3f}, "
                f"fastest-round ratio {fastest:.3f}, CPU time ratio {cpu:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
