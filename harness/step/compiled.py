"""Compile a one-batch step into what the loop calls: several batches per call.

Modelled on Keras's `TensorFlowTrainer._make_function`, so `engine: fit` runs the model's own
`train_step` compiled as `fit()` compiles it (`steps_per_execution`, `jit_compile`). A call
that finds the data exhausted raises `OutOfRangeError`; one that finds fewer batches than
`steps_per_execution` runs only those (unknown-length data ends without an extra step).

A compiled train call also returns what the loop needs to know about the optimizer, read
inside the call so the training thread never waits for it: the global step
(`optimizer.iterations`, which counts updates), the learning rate its last update applied,
and the values of its last batch alone (`logs` hold Keras's running means of the epoch).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from harness import keras_internals
from harness.step.engines import Engine
from harness.step.gradient_tape import Logs, Step
from harness.step.gradients import GradientPipeline
from harness.step.outputs import StepOutputs

TrainFunction = Callable[[Any], tuple[Logs, StepOutputs]]
TestFunction = Callable[[Any], Logs]


_COMPILED: weakref.WeakKeyDictionary[keras.Model, dict[tuple[Any, ...], Any]] = (
    weakref.WeakKeyDictionary()
)


def compiled_functions(
    model: keras.Model,
    engine: Engine,
    *,
    ema: Any | None = None,
    gradients: GradientPipeline | None = None,
) -> tuple[TrainFunction, TestFunction]:
    """The engine's compiled train and test calls for `model`, traced once per `compile()`.

    Like `Model.fit`, which keeps `model.train_function` between calls, a second `train()` of
    the same compiled model reuses the traced functions instead of tracing them again.
    """
    settings = (
        engine.name,
        model.steps_per_execution,
        model.jit_compile,
        model.run_eagerly,
        ema,
        None if gradients is None else gradients.trace_key,  # equal settings share a trace
        len(model.trainable_variables),  # unfreezing layers retraces, once
    )
    cached = _COMPILED.setdefault(model, {}).get(settings)
    # compile() makes a new loss tracker (and optimizer): a cached trace of the old is stale.
    compiled_with = (keras_internals.loss_tracker(model), model.optimizer)
    if (
        cached is None
        or cached[0][0] is not compiled_with[0]
        or cached[0][1] is not compiled_with[1]
    ):
        functions = (
            build_train_function(model, engine.train_step(model), ema=ema, gradients=gradients),
            build_test_function(model, engine.test_step(model)),
        )
        cached = _COMPILED[model][settings] = (compiled_with, functions)
    return cached[1]


def build_train_function(
    model: keras.Model,
    step: Step,
    *,
    ema: Any | None = None,
    gradients: GradientPipeline | None = None,
) -> TrainFunction:
    """`fn(iterator) -> (logs, StepOutputs)` over one execution.

    With `ema` (a `WeightAverage`), its update runs right after each step's update, in the
    same compiled call, in either engine, and only when the optimizer did update. With
    `gradients` (a `GradientPipeline`), every update's gradients pass through it.
    """
    optimizer = model.optimizer
    strategy = model.distribute_strategy
    gradients = gradients or GradientPipeline(model)
    gradients.build()
    update_start = _UpdateStart(model, gradients) if gradients.accumulation_steps > 1 else None

    def one_step(data: Any) -> tuple[Logs, StepOutputs]:
        # Nothing of the step may run unless its batch arrived: inlined into the caller's
        # graph, the optimizer's `iterations += 1` depends on no data and would otherwise
        # run even when reading the batch fails at the end of the data (an extra "step").
        with tf.control_dependencies(_tensors(data)):
            # Computed once, before the update, and applied by it: the logged rate is the
            # one `apply_gradients` used (schedules and loss-scale wrappers included).
            learning_rate = tf.identity(optimizer.learning_rate)
            updates_before = tf.identity(optimizer.iterations)
            before = [tf.identity(v) for v in model.metrics_variables]
            if update_start is not None:  # batch values of the whole update, not its last part
                before = update_start.metrics_before(before)
            with (
                keras_internals.applying_learning_rate(optimizer, learning_rate),
                gradients.installed(),
            ):
                outputs = strategy.run(step, args=(_optionals_to_none(data),))
            logs = keras_internals.reduce_per_replica(outputs, strategy, reduction="auto")
            iterations = tf.identity(optimizer.iterations)
            if ema is not None:
                # Post-update work, in graph; a micro-batch or a skipped step updated nothing.
                ema.update(iterations, applied=iterations > updates_before)
            batch = _batch_values(model, before, logs)
        outputs = StepOutputs(
            iterations=iterations,
            learning_rate=learning_rate,
            batch=batch,
            values=gradients.step_values(),
            halted_at=gradients.halted_at(),
        )
        return logs, outputs

    return _several_per_call(model, one_step)


class _UpdateStart:
    """The metric state where the current update's first micro-batch began (accumulation).

    With k micro-batches an update, the batch values logged at an update are Keras's metrics
    over all k of them: the change of the metric state since the first began.
    """

    def __init__(self, model: keras.Model, gradients: GradientPipeline) -> None:
        self._gradients = gradients
        with tf.init_scope():
            self._snapshots = [
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                for v in model.metrics_variables
            ]

    def metrics_before(self, current: list[Any]) -> list[Any]:
        starts = self._gradients.starts_update()
        for snapshot, value in zip(self._snapshots, current, strict=True):
            snapshot.assign(tf.where(starts, value, snapshot))
        return [tf.identity(snapshot) for snapshot in self._snapshots]


def _batch_values(model: keras.Model, before: list[Any], logs: Logs) -> Logs:
    """The logs of this batch alone, where `logs` holds Keras's running means of the epoch.

    A compiled metric's batch value is its result on the change of its state over the step:
    Keras's metrics accumulate sums (total and count, confusion counts), so the change is
    exactly the state of the metric had it seen only this batch. Keys the step returns that
    are not compiled metrics (a custom `train_step`'s own values) are already per batch.
    """
    variables = model.metrics_variables
    if not variables or not isinstance(logs, dict):
        return logs
    deltas = [tf.identity(v) - start for v, start in zip(variables, before, strict=True)]
    with keras.StatelessScope(state_mapping=list(zip(variables, deltas, strict=True))):
        results = model.get_metrics_result()
    return {key: results.get(key, value) for key, value in logs.items()}


def build_test_function(model: keras.Model, step: Step) -> TestFunction:
    """`fn(iterator) -> logs` over one execution."""
    strategy = model.distribute_strategy

    def one_step(data: Any) -> Logs:
        outputs = strategy.run(step, args=(_optionals_to_none(data),))
        return keras_internals.reduce_per_replica(outputs, strategy, reduction="auto")

    return _several_per_call(model, one_step)


def _tensors(data: Any) -> list[Any]:
    return [part for part in tf.nest.flatten(data) if isinstance(part, tf.Tensor)]


def _optionals_to_none(data: Any) -> Any:
    # Keras's `_autoconvert_optionals`: a generator's None becomes an empty Optional in tf.data.
    return tf.nest.map_structure(
        lambda part: None if isinstance(part, tf.experimental.Optional) else part, data
    )


def _several_per_call(model: keras.Model, one_step: Callable[[Any], Any]) -> Callable[[Any], Any]:
    per_call = int(model.steps_per_execution)
    if model.run_eagerly:

        def eager(iterator: Any) -> Any:
            outputs = one_step(next(iterator))
            for _ in range(per_call - 1):
                try:
                    batch = next(iterator)
                except (StopIteration, tf.errors.OutOfRangeError):
                    break
                outputs = one_step(batch)
            return outputs

        return eager

    compiled_step = tf.function(one_step, reduce_retracing=True, jit_compile=model.jit_compile)

    if per_call == 1:

        @tf.function(reduce_retracing=True)
        def one_per_call(iterator: Any) -> Any:
            # Reading the batch inside the graph avoids an eager op per step.
            return compiled_step(iterator.get_next())

        return _concrete_per_iterator(one_per_call)

    @tf.function(reduce_retracing=True)
    def several_per_call(iterator: Any) -> Any:
        outputs = compiled_step(iterator.get_next())
        for _ in tf.range(per_call - 1):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            outputs = compiled_step(batch.get_value())
        return outputs

    return _concrete_per_iterator(several_per_call)


def _concrete_per_iterator(function: Any) -> Callable[[Any], Any]:
    """`function(iterator)`, with the trace looked up once per iterator, not once per call.

    A `tf.function` finds the trace for its arguments at every call, hashing the iterator's
    whole type spec: a tenth of a millisecond or more per call, a large share of a small
    model's step. An epoch calls with one iterator, so its concrete function is kept.
    """
    last: list[Any] = [None, None]  # the iterator, its concrete function

    def call(iterator: Any) -> Any:
        if last[0] is not iterator:
            last[:] = [iterator, function.get_concrete_function(iterator)]
        return last[1](iterator)

    return call
