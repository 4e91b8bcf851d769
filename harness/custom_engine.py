"""The GradientTape engine: our own loop, driving Keras callbacks exactly as `fit()` does.

Events, their order and the `logs` keys match `keras.Model.fit`, so any Keras callback
(EarlyStopping, CSVLogger, TerminateOnNaN, a user's own) behaves the same in both engines.
"""

from __future__ import annotations

from typing import Any

import keras

from harness import keras_internals
from harness.steps import StepFunction, build_step_function, make_test_step, make_train_step


class CustomEngine:
    """Trains a compiled Keras model with a `tf.GradientTape` loop.

    The model must be compiled (optimizer, loss, metrics, `steps_per_execution`,
    `jit_compile`), exactly as for `fit()`.

    Example:
        >>> history = CustomEngine(model).fit(train_ds, epochs=3, validation_data=val_ds)
    """

    def __init__(self, model: keras.Model) -> None:
        if not getattr(model, "compiled", False):
            raise ValueError(
                "CustomEngine needs a compiled model: call model.compile(optimizer=..., "
                "loss=...) first."
            )
        self.model = model
        self._steps_per_execution = int(model.steps_per_execution)
        jit = bool(model.jit_compile)
        eager = bool(model.run_eagerly)
        self.train_function: StepFunction = build_step_function(
            model, make_train_step(model), jit_compile=jit, run_eagerly=eager
        )
        self.test_function: StepFunction = build_step_function(
            model, make_test_step(model), jit_compile=jit, run_eagerly=eager
        )

    def _epoch_iterator(self, data: Any, *, steps: int | None, shuffle: bool) -> Any:
        return keras_internals.TFEpochIterator(
            x=data,
            steps_per_epoch=steps,
            shuffle=shuffle,
            distribute_strategy=self.model.distribute_strategy,
            steps_per_execution=self._steps_per_execution,
        )

    def _run_steps(
        self,
        iterator: Any,
        function: StepFunction,
        callbacks: keras.callbacks.CallbackList,
        *,
        training: bool,
    ) -> dict[str, Any]:
        begin_batch = callbacks.on_train_batch_begin if training else callbacks.on_test_batch_begin
        end_batch = callbacks.on_train_batch_end if training else callbacks.on_test_batch_end
        logs: dict[str, Any] = {}
        with iterator.catch_stop_iteration():
            for begin, end, data_iterator in iterator:
                total = iterator.num_batches
                num_steps = self._steps_per_execution
                if total is not None:
                    num_steps = min(num_steps, total - begin)
                begin_batch(begin)
                logs = function(data_iterator, num_steps)
                # Like fit(), report the execution's nominal last index even when the final
                # execution of an epoch is short.
                end_batch(end, logs)
                stop_flag = "stop_training" if training else "stop_evaluating"
                if getattr(self.model, stop_flag, False):
                    break
        return logs

    def evaluate(
        self,
        data: Any,
        *,
        steps: int | None = None,
        callbacks: keras.callbacks.CallbackList | None = None,
        iterator: Any | None = None,
    ) -> dict[str, float]:
        """Evaluate on `data`; returns the metric results as a dict, like `evaluate()`."""
        if callbacks is None:
            callbacks = keras.callbacks.CallbackList([], model=self.model)
        if iterator is None:
            iterator = self._epoch_iterator(data, steps=steps, shuffle=False)
            keras_internals.symbolic_build(self.model, iterator)
        iterator.reset()
        self.model.stop_evaluating = False
        callbacks.on_test_begin()
        self.model.reset_metrics()
        self._run_steps(iterator, self.test_function, callbacks, training=False)
        logs = _to_python(self.model.get_metrics_result())
        callbacks.on_test_end(logs)
        return logs

    def fit(
        self,
        x: Any,
        *,
        epochs: int = 1,
        validation_data: Any | None = None,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        callbacks: list[keras.callbacks.Callback] | None = None,
        shuffle: bool = True,
        initial_epoch: int = 0,
        verbose: int = 0,
    ) -> keras.callbacks.History:
        """Train for `epochs` epochs; same arguments and return value as `Model.fit`."""
        model = self.model
        train_iterator = self._epoch_iterator(x, steps=steps_per_epoch, shuffle=shuffle)
        keras_internals.symbolic_build(model, train_iterator)
        train_iterator.reset()
        callback_list = keras.callbacks.CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=epochs,
            steps=train_iterator.num_batches,
            model=model,
        )
        val_iterator = None
        model.stop_training = False
        callback_list.on_train_begin()
        epoch_logs: dict[str, Any] = {}
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            self._run_steps(train_iterator, self.train_function, callback_list, training=True)
            epoch_logs = dict(model.get_metrics_result())
            if validation_data is not None:
                if val_iterator is None:
                    val_iterator = self._epoch_iterator(
                        validation_data, steps=validation_steps, shuffle=False
                    )
                val_logs = self.evaluate(
                    validation_data, callbacks=callback_list, iterator=val_iterator
                )
                epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
        if epochs > 0:
            model.optimizer.finalize_variable_values(model.trainable_weights)
        callback_list.on_train_end(logs=epoch_logs)
        return model.history


def _to_python(logs: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in logs.items()}
