"""The training process's CPU per logged step: the delivery path alone, no training.

`--steps` steps of the loop's step outputs (5 points each: batch loss and accuracy, learning
rate, grad norm, as the custom engine logs them) go through what `harness run` attaches —
the step event (its tensors read), MetricsLogger, FanOutSink, MLflow (sqlite, the writer child
started and ready) and TensorBoard — and the process's CPU time per step is reported (every
thread of the training process: the caller, MLflow's sender, TensorBoard's writer; not the
child), with the caller's own and the wall time until every point has landed:

    python -m benchmarks.tracking_cost --steps 3000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from harness.callbacks import MetricsLogger  # noqa: E402
from harness.callbacks.events import STEP_EVENTS_PARAM, StepEnd  # noqa: E402
from harness.step.outputs import StepOutputs  # noqa: E402
from tracking import FanOutSink, MlflowSink, TensorBoardSink  # noqa: E402

KINDS = ("read only", "logger only", "tensorboard", "mlflow", "mlflow + tensorboard")


class _Model:
    """What MetricsLogger reads of a model: the optimizer's step and rate."""

    class optimizer:  # noqa: N801 - an attribute, as on a keras.Model
        iterations = tf.Variable(0, dtype=tf.int64)
        learning_rate = tf.Variable(1e-3)


def _outputs(step: int) -> tuple[dict[str, Any], StepOutputs]:
    logs = {"loss": tf.constant(0.5), "accuracy": tf.constant(0.9)}
    return logs, StepOutputs(
        iterations=tf.constant(step, tf.int64),
        learning_rate=tf.constant(1e-3),
        batch={"loss": tf.constant(0.5), "accuracy": tf.constant(0.9)},
        values={"grad_norm": tf.constant(1.0)},
        halted_at=tf.constant(0, tf.int64),
    )


def _sink(kind: str, root: Path) -> FanOutSink:
    sinks: list[Any] = []
    if "mlflow" in kind:
        mlflow = MlflowSink.start(
            f"sqlite:///{root}/mlflow.db", experiment="cost", subprocess_after_cpu_s=0
        )
        while not mlflow.metric_writer.ready_now():
            time.sleep(0.05)
        sinks.append(mlflow)
    if "tensorboard" in kind:
        sinks.append(TensorBoardSink(root / "tb" / kind.replace(" ", "")))
    return FanOutSink(sinks)


def measure(kind: str, steps: int, root: Path) -> tuple[float, float, float]:
    """(process CPU, caller CPU, wall) in µs per step."""
    prepared = [_outputs(i + 1) for i in range(steps)]
    sink = _sink(kind, root)
    logger = MetricsLogger(sink, log_every_n_steps=1)
    logger.set_model(_Model)  # type: ignore[arg-type]
    logger.set_params({STEP_EVENTS_PARAM: True, "steps": steps})
    logger.on_train_begin()
    process, caller, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for batch, (logs, out) in enumerate(prepared):
        event = StepEnd(batch, int(out.iterations), out.learning_rate, logs, out.batch,
                        values=out.values, halted_at=out.halted_at)  # fmt: skip
        if kind == "read only":
            _ = event.learning_rate, event.batch_logs, event.values, event.halted_at
        else:
            logger.on_train_step_end(event)
    caller = time.thread_time() - caller
    sink.flush()
    process, wall = time.process_time() - process, time.perf_counter() - wall
    sink.close()
    return 1e6 * process / steps, 1e6 * caller / steps, 1e6 * wall / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    print(f"µs per logged step of 5 points, {args.steps} steps:")
    print(f"  {'path':22s} {'process':>8s} {'caller':>8s} {'wall':>8s} {'per point':>10s}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in KINDS:
            process, caller, wall = measure(kind, args.steps, Path(tmp))
            print(f"  {kind:22s} {process:8.1f} {caller:8.1f} {wall:8.1f} {process / 5:10.1f}")


if __name__ == "__main__":
    main()
