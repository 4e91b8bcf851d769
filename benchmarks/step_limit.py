"""Our compiled step against a bare GradientTape step, call by call (no loop around them).

Same model (the digits MLP), same batches, each variant's compiled call timed over `--calls`
calls per sample, variants interleaved, medians of `--samples` samples; the ratio is time
per step to the bare step's (below 1: faster):

- `bare`: `tf.function` GradientTape step reading its batch from the iterator, a loss object,
  `keras.metrics.Mean` of the loss and an accuracy metric;
- `+ compute_loss`, `+ compute_metrics`: the same with Keras's compiled loss (and its loss
  tracker), then its compiled metrics, as `fit()`'s `train_step` uses them;
- ours, `engine: custom` and `engine: fit`, as the loop calls them (gradient norm, NaN guard,
  batch values, the applied rate and the step read in the call); `measure=False`: no norm and
  no guard.

    python -m benchmarks.step_limit --samples 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.overhead import build_model, digits_data  # noqa: E402
from harness import keras_internals  # noqa: E402
from harness.step.compiled import build_train_function  # noqa: E402
from harness.step.engines import get_engine  # noqa: E402
from harness.step.gradients import GradientPipeline  # noqa: E402


def bare_step(model: keras.Model, *, keras_loss: bool, keras_metrics: bool) -> Callable:  # type: ignore[type-arg]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    mean, accuracy = keras.metrics.Mean(), keras.metrics.SparseCategoricalAccuracy()
    optimizer = model.optimizer

    @tf.function
    def step(iterator: Any) -> Any:
        x, y = iterator.get_next()[:2]
        with tf.GradientTape() as tape:
            predictions = model(x, training=True)
            if keras_loss:
                loss = model.compute_loss(x, y, predictions, None, training=True)
                tracker = keras_internals.loss_tracker(model)
                tracker.update_state(loss, sample_weight=tf.shape(x)[0])
            else:
                loss = loss_fn(y, predictions)
                mean.update_state(loss)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        if keras_metrics:
            return model.compute_metrics(x, y, predictions, sample_weight=None)
        accuracy.update_state(y, predictions)
        return {}

    return step


def our_step(model: keras.Model, engine: str, data: Any, **options: Any) -> Callable:  # type: ignore[type-arg]
    keras_internals.symbolic_build(model, data.train.element_spec)
    pipeline = GradientPipeline(model, **options)
    pipeline.build()
    return build_train_function(model, get_engine(engine).train_step(model), gradients=pipeline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    data = digits_data(4, 32)
    variants: dict[str, Callable[[keras.Model], Callable]] = {  # type: ignore[type-arg]
        "bare": lambda m: bare_step(m, keras_loss=False, keras_metrics=False),
        "bare + compute_loss": lambda m: bare_step(m, keras_loss=True, keras_metrics=False),
        "bare + compute_metrics": lambda m: bare_step(m, keras_loss=True, keras_metrics=True),
        "ours custom": lambda m: our_step(m, "custom", data),
        "ours custom measure=False": lambda m: our_step(m, "custom", data, measure=False),
        "ours fit": lambda m: our_step(m, "fit", data),
    }
    calls = {}
    for name, make in variants.items():
        model = build_model()
        step, iterator = make(model), iter(data.train.as_dataset(1).repeat())
        step(iterator)  # traced outside the timing
        calls[name] = (step, iterator)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.samples):
        for name, (step, iterator) in calls.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                outputs = step(iterator)
            tf.nest.map_structure(lambda t: getattr(t, "numpy", lambda: t)(), outputs)
            times[name].append(1e6 * (time.perf_counter() - start) / args.calls)
    bare = statistics.median(times["bare"])
    print(f"µs per compiled step, medians of {args.samples} samples of {args.calls} calls:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:28s} {median:7.0f}   x bare {median / bare:.3f}")


if __name__ == "__main__":
    main()
