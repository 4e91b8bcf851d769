"""Between the gradients and the update: accumulation, the gradient norm, the NaN guard.

Both engines hand their gradients to the optimizer's `apply` — Keras's `train_step`, a user's
override, our GradientTape step alike. While the compiled step is traced, `GradientPipeline`
stands in front of the optimizer's `apply` (the inner one under loss scaling, so it sees
unscaled gradients), so all of this is identical in both engines and runs inside the
compiled call, with no extra pass over the gradients:

1. With `accumulation_steps: k`, gradients are summed over k micro-batches and the k-th hands
   their mean on; `optimizer.iterations`, and so schedules, EMA and `step/*`, count updates.
   An epoch whose batches k does not divide ends with a shorter window (as Lightning does):
   its last micro-batch hands on the mean of the ones it has, so no batch is left out and
   no update spans two epochs (`start_epoch` tells the pipeline the epoch's length).
2. The global norm of what would be applied is computed once: logged as `step/grad_norm`
   (before clipping, which Keras's `apply` does next) and checked for NaN / Inf.
3. A non-finite norm never reaches the weights. `skip_step` counts it (`skipped_steps`) and
   goes on; `raise` and `stop` halt: no later update is applied either, and the loop, told
   through the step's outputs without waiting for them, raises or stops at the next boundary.

Keras's own clipping (`clipnorm`, `clipvalue`, `global_clipnorm`) and decoupled weight decay
then run inside `apply` on what the pipeline passes on.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, get_args

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from harness import keras_internals
from harness.precision import loss_scale, scales_loss
from harness.stopping import NonFiniteGradients

__all__ = ["NAN_POLICIES", "GradientPipeline", "NanPolicy", "NonFiniteGradients"]

NanPolicy = Literal["raise", "stop", "skip_step"]
NAN_POLICIES: tuple[str, ...] = get_args(NanPolicy)

# The variables of every built pipeline, by model and settings: a pipeline with the same
# settings on the same model (a second `train()`) shares them, and so the step traced with them.
_BUILT: weakref.WeakKeyDictionary[keras.Model, dict[tuple[Any, ...], tuple[Any, ...]]] = (
    weakref.WeakKeyDictionary()
)


class GradientPipeline:
    """Accumulates, measures and guards one model's gradients inside its compiled step.

    Args:
        model: the compiled model whose optimizer applies the gradients.
        accumulation_steps: micro-batches per optimizer update.
        on_nan: what a non-finite gradient norm does: `raise` (default), `stop` (end training
            as `TerminateOnNaN` does) or `skip_step` (leave weights, optimizer state and EMA
            as they are, count the step, go on).
        lr_multipliers: `(variable, multiplier)` pairs: those variables' updates (and their
            decoupled weight decay) apply the step's learning rate times the multiplier.
        measure: False hands the gradients on untouched — no norm, no NaN guard (the
            baseline `benchmarks/overhead.py` measures them against).

    Example:
        >>> pipeline = GradientPipeline(model, accumulation_steps=4, on_nan="skip_step")
        >>> train(model, data, gradients=pipeline)
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        accumulation_steps: int = 1,
        on_nan: NanPolicy = "raise",
        lr_multipliers: Sequence[tuple[Any, float]] = (),
        measure: bool = True,
    ) -> None:
        if accumulation_steps < 1:
            raise ValueError(
                "`accumulation_steps` must be >= 1. Received: "
                f"accumulation_steps={accumulation_steps}"
            )
        if on_nan not in NAN_POLICIES:
            raise ValueError(
                f"`on_nan` must be one of {', '.join(NAN_POLICIES)}. Received: on_nan={on_nan!r}"
            )
        self.model = model
        self.accumulation_steps = int(accumulation_steps)
        self.on_nan = on_nan
        self.measure = measure
        self.lr_multipliers = [(v, float(m)) for v, m in lr_multipliers if float(m) != 1.0]
        self.halt_reason: str | None = None  # set when a halt was seen (raise, stop)
        self._variables: dict[str, Any] | None = None
        self._accumulators: list[Any] = []

    @property
    def settings(self) -> tuple[Any, ...]:
        """What the traced step depends on besides the variables: equal settings on one
        model share the variables and the trace."""
        multipliers = tuple((id(v), m) for v, m in self.lr_multipliers)
        return (self.accumulation_steps, self.on_nan, self.measure, multipliers)

    @property
    def trace_key(self) -> tuple[Any, ...]:
        """The settings and the variables (built): the compiled step's cache key."""
        self.build()
        return (self.settings, id(self._variables))

    def build(self) -> None:
        """Create the pipeline's variables (or share those of a pipeline with the same
        settings on the same model, built for the same optimizer); after the optimizer is
        built, before tracing."""
        if self._variables is not None:
            return
        optimizer = keras_internals.inner_optimizer(self.model.optimizer)
        built = _BUILT.setdefault(self.model, {})
        shared = built.get(self.settings)
        if shared is not None and shared[0]() is optimizer:
            self._variables, self._accumulators = shared[1], shared[2]
            return
        with self.model.distribute_strategy.scope():
            self._variables = {
                "grad_norm": keras.Variable(0.0, "float32", trainable=False, name="grad_norm"),
                "skipped_steps": keras.Variable(0, "int64", trainable=False, name="skipped"),
                # The update number whose gradients were not finite; 0: none (raise, stop).
                "halted_at": keras.Variable(0, "int64", trainable=False, name="halted_at"),
                "micro_steps": keras.Variable(0, "int64", trainable=False, name="micro_steps"),
                # Micro-batches summed for the update in progress, and the epoch's batches
                # still to come (-1: the epoch's length is not known).
                "window": keras.Variable(0, "int64", trainable=False, name="window"),
                "batches_left": keras.Variable(-1, "int64", trainable=False, name="left"),
            }
            if self.accumulation_steps > 1:
                self._accumulators = [
                    keras.Variable(
                        np.zeros(v.shape, v.dtype), trainable=False, name=f"accumulated_{i}"
                    )
                    for i, v in enumerate(keras_internals.optimizer_variables(optimizer))
                ]
        built[self.settings] = (weakref.ref(optimizer), self._variables, self._accumulators)

    def start_epoch(self, batches_left: int | None) -> None:
        """The epoch (or, resumed, its rest) has `batches_left` batches (None: not known):
        its last one ends an update whatever the window holds."""
        self.build()
        left = -1 if batches_left is None else int(batches_left)
        self._state()["batches_left"].assign(left)

    def clear_halt(self) -> None:
        """Forget a halt (a new `run()`); updates apply again."""
        self.halt_reason = None
        if self._variables is not None:
            self._variables["halted_at"].assign(0)

    @property
    def value_names(self) -> list[str]:
        """What a compiled step logs besides the batch's logs: `grad_norm`, `skipped_steps`
        under `skip_step`, and `loss_scale` under dynamic loss scaling (mixed_float16)."""
        names = ["grad_norm"] if self.measure else []
        names += ["skipped_steps"] if self.on_nan == "skip_step" and self.measure else []
        names += ["loss_scale"] if scales_loss(self.model.optimizer) else []
        return names

    def step_values(self) -> dict[str, Any]:
        """`value_names`' values, as tensors of the compiled step."""
        state = self._state()
        values = {name: tf.identity(state[name]) for name in self.value_names if name in state}
        scale = loss_scale(self.model.optimizer)
        if scale is not None:
            values["loss_scale"] = tf.identity(scale)
        return values

    def starts_update(self) -> Any:
        """Whether the next micro-batch is the first of an update (read before its step)."""
        return ops.equal(self._state()["window"], 0)

    def halted_at(self) -> Any:
        """The update whose gradients halted training (0: none), as a tensor of the step."""
        return tf.identity(self._state()["halted_at"])

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Inside the block (while a step is traced), updates go through the pipeline."""
        self.build()
        optimizer = self.model.optimizer
        inner = keras_internals.inner_optimizer(optimizer)
        with contextlib.ExitStack() as patches:
            patches.enter_context(keras_internals.routing_apply(inner, self._apply))
            if self.model.distribute_strategy.num_replicas_in_sync > 1:
                # Keras sums the replicas' gradients only inside the inner optimizer's update,
                # after clipping, so a norm, a NaN check or a clip before it would see one
                # replica's share. Summed on entry (each replica's loss is already divided by
                # their number), everything after — loss scaling's overflow check, our norm,
                # accumulation, Keras's clipping — sees the global batch's gradient.
                patches.enter_context(
                    keras_internals.summing_replicas_on_entry(optimizer, _sum_over_replicas)
                )
            if self.lr_multipliers:
                patches.enter_context(
                    keras_internals.scaling_learning_rates(inner, self.lr_multipliers)
                )
            yield

    def _apply(self, original: Any, grads: Any, variables: Any) -> None:
        optimizer = keras_internals.inner_optimizer(self.model.optimizer)
        if variables is None:
            variables = keras_internals.optimizer_variables(optimizer)
        variables = list(variables)
        grads = list(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            self._update(original, grads, variables)
            return

        # Several replicas, holding the same (summed) gradients: decide once, in cross-replica
        # context, where a branch may hold the update's synchronisation (not so in a
        # replica's), and apply in every replica.
        def in_cross_replica(strategy: Any, grads: list[Any]) -> None:
            first = [
                None if g is None else strategy.experimental_local_results(g)[0] for g in grads
            ]

            def apply_in_replicas(grads: list[Any], variables: list[Any]) -> None:
                strategy.extended.call_for_each_replica(original, args=(grads, variables))

            self._update(apply_in_replicas, first, variables)

        context.merge_call(in_cross_replica, args=(grads,))

    def _update(self, original: Any, grads: list[Any], variables: list[Any]) -> None:
        optimizer = keras_internals.inner_optimizer(self.model.optimizer)
        if self.accumulation_steps == 1:
            self._guarded(original, grads, variables)
            return
        state = self._state()
        k = self.accumulation_steps
        sums = [self._accumulators[keras_internals.variable_index(optimizer, v)] for v in variables]
        for total, grad in zip(sums, grads, strict=True):
            if grad is not None:
                total.assign_add(ops.cast(grad, total.dtype))
        state["micro_steps"].assign_add(1)
        window = state["window"]
        window.assign_add(1)
        left = state["batches_left"]
        left.assign(ops.where(ops.greater(left, 0), left - 1, left))  # -1 stays: unknown

        def update() -> None:
            count = ops.cast(window, "float32")
            mean = [
                None if g is None else ops.divide(total, ops.cast(count, total.dtype))
                for g, total in zip(grads, sums, strict=True)
            ]
            self._guarded(original, mean, variables)
            for total in sums:
                total.assign(ops.zeros_like(total))
            window.assign(0)

        # k micro-batches make an update; the epoch's last one ends a shorter window.
        due = ops.logical_or(ops.greater_equal(window, k), ops.equal(left, 0))
        ops.cond(due, update, lambda: None)

    def _guarded(self, original: Any, grads: list[Any], variables: list[Any]) -> None:
        if not self.measure:
            original(grads, variables)
            return
        state = self._state()
        present = [ops.cast(g, "float32") for g in grads if g is not None]
        norm = tf.linalg.global_norm(present) if present else ops.zeros((), "float32")
        state["grad_norm"].assign(norm)
        finite = ops.isfinite(norm)  # a NaN or Inf anywhere makes the norm NaN or Inf
        if self.on_nan == "skip_step":

            def skip() -> None:
                state["skipped_steps"].assign_add(1)

            ops.cond(finite, lambda: original(grads, variables), skip)
            return
        halted = state["halted_at"]
        iterations = keras_internals.inner_optimizer(self.model.optimizer).iterations

        def halt() -> None:
            first = ops.equal(halted, 0)
            halted.assign(ops.where(first, ops.cast(iterations, "int64") + 1, halted))

        ops.cond(
            ops.logical_and(finite, ops.equal(halted, 0)),
            lambda: original(grads, variables),
            halt,
        )

    def _state(self) -> dict[str, Any]:
        assert self._variables is not None
        return self._variables

    def state(self) -> dict[str, Any]:
        """Everything a resume needs: counters and the partial sums of an update."""
        values = {name: np.array(v.numpy()) for name, v in self._state().items()}
        return {**values, "accumulated": [np.array(a.numpy()) for a in self._accumulators]}

    def snapshot(self) -> dict[str, Any]:
        """`state()` as tensors read now (see `harness.state.read`)."""
        from harness.state import read

        values = {name: read(v) for name, v in self._state().items()}
        return {**values, "accumulated": [read(a) for a in self._accumulators]}

    def restore(self, state: Mapping[str, Any]) -> None:
        self.build()
        for name, variable in self._state().items():
            if name in state:  # a checkpoint from before `window` (saved at an update's end)
                variable.assign(state[name])
            elif name == "window":
                variable.assign(0)
        for total, value in zip(self._accumulators, state["accumulated"], strict=True):
            total.assign(value)

    def on_halt(self, step: int, batch_logs: Mapping[str, float]) -> str:
        """The line that says where training halted; kept in `halt_reason`."""
        bad = [f"{k}={v}" for k, v in batch_logs.items() if not np.isfinite(v)]
        seen = f" (batch {', '.join(bad)})" if bad else ""
        self.halt_reason = (
            f"the gradients of optimizer update {step} are not finite{seen}; "
            f"trainer.on_nan={self.on_nan} halted training there, before that update. Lower "
            "the learning rate, clip the gradients (optimizer.clipnorm or "
            "optimizer.global_clipnorm), or set trainer.on_nan=skip_step to skip such updates"
        )
        return self.halt_reason


def _sum_over_replicas(grads: list[Any]) -> list[Any]:
    """Each gradient summed over the replicas (in a replica's context); None stays None."""
    present = [i for i, g in enumerate(grads) if g is not None]
    context = tf.distribute.get_replica_context()
    summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
    out = list(grads)
    for i, value in zip(present, summed, strict=True):
        out[i] = value
    return out
