"""`TrainingLoop`: the one outer loop both engines share.

It drives a `keras.callbacks.CallbackList` with exactly `Model.fit`'s events, order and `logs`
keys — any Keras callback, or a user's own, behaves as in `fit()` — and owns what a run's
continuation needs: the data position (`EpochIterator`), the global step (`optimizer.iterations`,
read inside each compiled call), the stop flag checked between compiled calls, and the
registry of savable state. An engine only supplies the compiled one-batch steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from harness import keras_internals
from harness.callbacks.events import STEP_EVENTS_PARAM, StepEventDispatcher
from harness.checkpoints import Checkpointing, Saver
from harness.data import EpochIterator, TrainingData
from harness.state import CallbackStates, Parts, RandomState, StateRegistry, VariablesState
from harness.step.compiled import TestFunction, TrainFunction, compiled_functions
from harness.step.ema import WeightAverage
from harness.step.engines import Engine, EngineName, get_engine
from harness.step.gradients import GradientPipeline, NonFiniteGradients
from harness.stopping import StopSignal, TrainingInterrupted


class TrainingLoop:
    """Trains a compiled model: epochs of compiled calls, validation, callbacks, state.

    Args:
        model: a compiled `keras.Model` (optimizer, loss, metrics, `steps_per_execution`,
            `jit_compile` as for `fit()`).
        data: training and validation sources (`prepare_data`).
        engine: `fit` (the model's own `train_step`) or `custom` (our GradientTape step).
        epochs, steps_per_epoch, validation_steps, initial_epoch: as in `Model.fit`.
        callbacks: Keras callbacks, run exactly as `fit()` runs them.
        stop: a flag that stops training at the next step boundary (`stop_on_signals`).
        ema: a `WeightAverage` updated inside each compiled step; validation also evaluates
            its weights (`val_ema_*`).
        gradients: a `GradientPipeline` every update's gradients pass through (accumulation,
            the gradient norm, the NaN guard); default: no accumulation, `on_nan="raise"`.

    Example:
        >>> loop = TrainingLoop(model, prepare_data((x, y), batch_size=32), engine="custom")
        >>> history = loop.run()
    """

    def __init__(
        self,
        model: keras.Model,
        data: TrainingData,
        *,
        engine: EngineName | Engine = "fit",
        epochs: int = 1,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        initial_epoch: int = 0,
        stop: StopSignal | None = None,
        ema: WeightAverage | None = None,
        gradients: GradientPipeline | None = None,
        checkpointing: Checkpointing | None = None,
    ) -> None:
        if not getattr(model, "compiled", False):
            raise ValueError(
                "the training loop needs a compiled model: call model.compile(optimizer=..., "
                "loss=...) first."
            )
        self.model = model
        self.engine = get_engine(engine)
        self.epochs = epochs
        self.initial_epoch = initial_epoch
        self.stop = stop or StopSignal()
        self.ema = ema
        self.gradients = gradients or GradientPipeline(model)
        self._halt = _HaltWatch(self.gradients)
        self._saver = (
            None
            if checkpointing is None
            else Saver(
                checkpointing,
                capture=self._capture_for_checkpoint,
                step=lambda: int(model.optimizer.iterations.numpy()),
                accumulation_steps=self.gradients.accumulation_steps,
            )
        )
        self._events: StepEventDispatcher | None = None
        strategy, per_call = model.distribute_strategy, int(model.steps_per_execution)
        self.train_data = EpochIterator(
            data.train, strategy=strategy, steps_per_epoch=steps_per_epoch,
            steps_per_execution=per_call,
        )  # fmt: skip
        self.validation_data = (
            None
            if data.validation is None
            else EpochIterator(
                data.validation,
                strategy=strategy,
                steps_per_epoch=validation_steps,
                steps_per_execution=per_call,
            )  # fmt: skip
        )
        self.callbacks = keras.callbacks.CallbackList(
            list(callbacks), add_history=True, add_progbar=False, model=model
        )
        self._epoch = 0  # the epoch in progress, or the next one to start
        self._pending_state: dict[str, Any] | None = None
        self._train_function: TrainFunction | None = None
        self._trainable_count = 0
        self._test_function: TestFunction | None = None
        self._train_batch_hooks = self._test_batch_hooks = True
        self.state = StateRegistry()
        self.state.register(Parts.MODEL, VariablesState("model", lambda: model.variables))
        self.state.register(
            Parts.METRICS, VariablesState("metrics", lambda: model.metrics_variables)
        )
        self.state.register(
            Parts.OPTIMIZER, VariablesState("optimizer", lambda: model.optimizer.variables)
        )
        self.state.register(Parts.DATA, self.train_data)  # replays data hooks before the RNGs
        self.state.register(Parts.RANDOM, RandomState())
        self.state.register(Parts.GRADIENTS, self.gradients)
        if ema is not None:
            self.state.register(Parts.EMA, ema)
        self.state.register(Parts.CALLBACKS, CallbackStates(lambda: self.callbacks.callbacks))
        self.state.register(Parts.LOOP, _Position(self))

    def capture_state(self, *, snapshot: bool = False) -> dict[str, Any]:
        """Every registered part's state at this step boundary (plain Python and NumPy).

        `snapshot`: large parts as tensors read now, for `harness.state.materialize` later.
        """
        self._build()
        return self.state.capture(snapshot=snapshot)

    def _capture_for_checkpoint(self) -> dict[str, Any]:
        if self._events is not None:
            self._events.flush()  # step events delivered: callbacks' state matches the weights
        return self.capture_state(snapshot=True)  # the writer thread copies it out

    def restore_state(self, state: dict[str, Any]) -> None:
        """Continue from `state` when `run()` is next called (after `on_train_begin`)."""
        self._pending_state = state

    def run(self) -> keras.callbacks.History:
        """Train; returns the model's `History`, like `Model.fit`.

        Raises:
            TrainingInterrupted: a stop was requested; the loop stopped at a step boundary,
                where `capture_state()` finds weights, data position and callbacks together.
        """
        model = self._build()
        restoring, self._pending_state = self._pending_state, None
        if restoring is None:
            self.train_data.reset()
            self.gradients.clear_halt()
        self._halt.message = None
        self.callbacks.set_params(
            {
                "verbose": 0,
                "epochs": self.epochs,
                "steps": self.train_data.num_batches,
                STEP_EVENTS_PARAM: True,
            }
        )
        model.stop_training = False
        callbacks = self.callbacks.callbacks
        self._train_batch_hooks = _need_hooks(callbacks, _TRAIN_BATCH_HOOKS, step_events=True)
        self._test_batch_hooks = _need_hooks(callbacks, _TEST_BATCH_HOOKS, step_events=False)
        events = self._events = StepEventDispatcher([*callbacks, self._halt])
        try:
            self.callbacks.on_train_begin()
            if restoring is not None:
                self.state.restore(restoring)  # after on_train_begin reset the callbacks
            else:
                self._epoch = keras_internals.initial_epoch(model) or self.initial_epoch
                if self._saver is not None:  # a run killed before its first save resumes too
                    self._saver.now(epoch=self._epoch)
            logs = self._run_epochs(events)
            if self._saver is not None:
                self._saver.at_end(logs, epoch=self._epoch)
            if isinstance(model.optimizer, keras.optimizers.Optimizer) and self.epochs > 0:
                model.optimizer.finalize_variable_values(model.trainable_weights)
            self.callbacks.on_train_end(logs=logs)
        except BaseException:
            # Whatever comes next (closing sinks, saving) sees every callback call finished.
            _quietly(lambda: keras_internals.drain_callbacks(self.callbacks))
            raise
        finally:
            _quietly(events.close)  # delivers the step events still queued
            if self._saver is not None:
                _quietly(self._saver.store.wait)  # what was saved is on disk before we return
        return model.history

    def _build(self) -> keras.Model:
        """Build the model's, metrics' and optimizer's variables and the compiled calls."""
        model = self.model
        if self._train_function is None:
            keras_internals.symbolic_build(model, self.train_data.element_spec)
            self.gradients.build()
            self._compile_functions()
        return model

    def _compile_functions(self) -> None:
        self._trainable_count = len(self.model.trainable_variables)
        self._train_function, self._test_function = compiled_functions(
            self.model, self.engine, ema=self.ema, gradients=self.gradients
        )

    def _run_epochs(self, events: StepEventDispatcher) -> dict[str, Any] | None:
        model, callbacks = self.model, self.callbacks
        training_logs = None
        while self._epoch < self.epochs:
            self._check_stop()
            resumed = self.train_data.resuming
            if not resumed:
                model.reset_metrics()  # a run resumed mid-epoch keeps its restored metrics
            callbacks.on_epoch_begin(self._epoch)
            if len(model.trainable_variables) != self._trainable_count:
                self._compile_functions()  # layers (un)frozen: one retrace, not one per step
            logs = self._train_epoch(events)
            events.hand_over()  # the epoch's last steps reach callbacks during validation
            self._check_stop()
            self._act_on_halt()
            epoch_logs = dict(_metrics_or_logs(model, logs))
            if self.validation_data is not None:
                val_logs = self._evaluate()
                epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
                if self.ema is not None:
                    # The averaged weights, evaluated on the same data; training goes on with
                    # the raw ones (the swap is undone whatever happens inside).
                    with self.ema.swapped():
                        ema_logs = self._evaluate(notify=False)
                    epoch_logs.update({f"val_ema_{k}": v for k, v in ema_logs.items()})
            events.flush()  # step events of the epoch reach their callbacks before its end
            self._act_on_halt()
            callbacks.on_epoch_end(self._epoch, epoch_logs)
            training_logs = epoch_logs
            self._epoch += 1
            if self._saver is not None:
                self._saver.at_epoch_end(epoch_logs, epochs_done=self._epoch)
            if model.stop_training:
                break
        return training_logs

    def _train_epoch(self, events: StepEventDispatcher) -> Any:
        model, callbacks, data = self.model, self.callbacks, self.train_data
        train = self._train_function
        assert train is not None
        logs: Any = None
        hooks = self._train_batch_hooks
        k, batches = self.gradients.accumulation_steps, data.num_batches
        if k > 1:  # the epoch's last batch ends an update, even a shorter one
            self.gradients.start_epoch(None if batches is None else batches - data.position)
        with data.catch_stop_iteration():
            for first, last, iterator in data:
                if hooks:
                    callbacks.on_train_batch_begin(first)
                logs, outputs = train(iterator)
                if hooks:  # reading the logs here makes the training thread wait for the step
                    callbacks.on_train_batch_end(last, logs)
                events.dispatch(last, logs, outputs)
                # Checkpoints and stops come at update boundaries: never mid-accumulation.
                boundary = (last + 1) % k == 0 or (batches is not None and last + 1 >= batches)
                if self._saver is not None:
                    # A short last execution is reported by its nominal index (as fit() does):
                    # the batches done are at most the epoch's.
                    done = min(last + 1, data.num_batches or last + 1)
                    self._saver.after_batches(
                        last - first + 1, done, epoch=self._epoch, boundary=boundary
                    )
                if model.stop_training or self._halt.message:
                    break
                if self.stop.requested and boundary:
                    break
        return logs

    def _evaluate(self, *, notify: bool = True) -> dict[str, Any]:
        """One pass over the validation data, with `evaluate()`'s events if `notify`."""
        model, callbacks, data = self.model, self.callbacks, self.validation_data
        test = self._test_function
        assert data is not None and test is not None
        data.reset()
        model.stop_evaluating = False
        if notify:
            callbacks.on_test_begin()
        logs: Any = None
        model.reset_metrics()
        hooks = self._test_batch_hooks and notify
        with data.catch_stop_iteration():
            for first, last, iterator in data:
                if hooks:
                    callbacks.on_test_batch_begin(first)
                logs = test(iterator)
                if hooks:
                    callbacks.on_test_batch_end(last, logs)
                if model.stop_evaluating:
                    break
        results = _pythonify(_metrics_or_logs(model, logs))
        if notify:
            callbacks.on_test_end(results)
        return results

    def _check_stop(self) -> None:
        if self.stop.requested:
            if self._saver is not None:
                self._saver.now(epoch=self._epoch, wait=True)  # on disk before the process exits
            raise TrainingInterrupted(self.stop.reason)

    def _act_on_halt(self) -> None:
        """After a non-finite update: raise (`on_nan="raise"`) or end training (`stop`)."""
        if self._halt.message is None:
            return
        if self.gradients.on_nan == "raise":
            raise NonFiniteGradients(self._halt.message)
        self.model.stop_training = True


class _HaltWatch:
    """Notices, from the step events, that the gradient pipeline halted training."""

    async_safe = True

    def __init__(self, gradients: GradientPipeline) -> None:
        self._gradients = gradients
        self.message: str | None = None

    def on_train_step_end(self, event: Any) -> None:
        if self.message is None and event.halted_at:
            self.message = self._gradients.on_halt(event.halted_at, event.batch_logs)


class _Position:
    """The loop's own part of the state: which epoch is in progress."""

    def __init__(self, loop: TrainingLoop) -> None:
        self._loop = loop

    def state(self) -> dict[str, int]:
        return {"epoch": self._loop._epoch}

    def restore(self, state: dict[str, int]) -> None:
        skipped = self._loop.train_data.skipped_epoch_rest
        self._loop._epoch = int(state["epoch"]) + (1 if skipped else 0)


_TRAIN_BATCH_HOOKS = (
    "on_train_batch_begin",
    "on_train_batch_end",
    "on_batch_begin",
    "on_batch_end",
)
_TEST_BATCH_HOOKS = ("on_test_batch_begin", "on_test_batch_end")


def _need_hooks(callbacks: Sequence[Any], hooks: Sequence[str], *, step_events: bool) -> bool:
    """Whether any callback defines one of `hooks`. A callback that defines none is never
    called per batch — unobservable — so the loop can skip reading each batch's logs."""
    # An instance attribute counts too: LambdaCallback sets its hooks on the instance.
    return any(
        getattr(getattr(callback, hook), "__func__", None)
        is not getattr(keras.callbacks.Callback, hook)
        for callback in callbacks
        if not (step_events and getattr(callback, "step_events_only", False))
        for hook in hooks
    )


def _metrics_or_logs(model: keras.Model, logs: Any) -> Any:
    """The model's metric results, unless a custom step returned other keys (Keras's rule)."""
    results = model.get_metrics_result()
    if logs is None or (isinstance(logs, dict) and set(logs) == set(results)):
        return results
    return logs


def _pythonify(logs: Any) -> dict[str, Any]:
    """Floats where a value is a scalar, NumPy arrays otherwise; keys sorted, as Keras does."""
    result: dict[str, Any] = {}
    for key, value in sorted(dict(logs).items()):
        array = np.asarray(value)
        result[key] = float(array) if array.ndim == 0 else array
    return result


def _quietly(action: Any) -> None:
    """Run a clean-up step while an error propagates; its own failure must not replace it."""
    try:
        action()
    except Exception as error:
        warnings.warn(
            f"while training was stopping, a callback also failed: {error!r}", stacklevel=3
        )
