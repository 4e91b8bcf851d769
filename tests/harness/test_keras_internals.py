"""The contract of every private Keras piece the harness uses (`harness.keras_internals`).

A Keras upgrade that moves one of them fails here, under its own name, not deep in the loop.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import keras_internals
from tests.harness.problems import digits, make_model

pytestmark = pytest.mark.door("keras", "harness/keras_internals.py")


def _spec() -> tuple[tf.TensorSpec, tf.TensorSpec]:
    return tf.TensorSpec((None, 64), tf.float32), tf.TensorSpec((None,), tf.int32)


def test_symbolic_build_creates_optimizer_and_metric_variables_from_a_spec() -> None:
    model = make_model()
    assert not model.optimizer.built
    keras_internals.symbolic_build(model, _spec())
    assert model.optimizer.built and len(model.optimizer.variables) > 2
    assert {v.path for v in model.metrics_variables} >= {"loss/total", "loss/count"}


def test_compute_loss_and_the_loss_tracker_are_what_fit_reports() -> None:
    model = make_model()
    keras_internals.symbolic_build(model, _spec())
    x, y = digits(8)
    y_pred = model(x)
    loss = keras_internals.compute_loss(model, x, y, y_pred, None, training=False)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, y_pred)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
    tracker = keras_internals.loss_tracker(model)
    tracker.update_state(loss)
    assert tracker.name == "loss"
    np.testing.assert_allclose(float(model.get_metrics_result()["loss"]), float(loss), rtol=1e-6)


def test_unscale_and_reduce_per_replica_pass_values_through_without_a_strategy() -> None:
    value = tf.constant(2.5)
    assert float(keras_internals.unscale_loss_for_distribution(value)) == 2.5
    reduced = keras_internals.reduce_per_replica(
        {"loss": value}, tf.distribute.get_strategy(), reduction="auto"
    )
    assert float(reduced["loss"]) == 2.5


def test_initial_epoch_is_none_until_backup_and_restore_sets_it() -> None:
    assert keras_internals.initial_epoch(make_model()) is None


def test_drain_callbacks_waits_for_pending_calls_and_stops_the_executor() -> None:
    import concurrent.futures
    import time

    callbacks = keras.callbacks.CallbackList([])
    callbacks._executor = concurrent.futures.ThreadPoolExecutor(1)
    done: list[int] = []
    callbacks._futures = [callbacks._executor.submit(lambda: (time.sleep(0.2), done.append(1)))]
    keras_internals.drain_callbacks(callbacks)
    assert done == [1] and callbacks._executor is None
    keras_internals.drain_callbacks(keras.callbacks.CallbackList([]))  # nothing pending: fine


def test_global_seed_state_round_trips_unseeded_random_ops() -> None:
    keras.utils.set_random_seed(3)
    keras.random.uniform((2,))  # creates the global generator
    saved = keras_internals.global_seed_state()
    first = keras.ops.convert_to_numpy(keras.random.uniform((4,)))
    keras_internals.set_global_seed_state(saved)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.random.uniform((4,))), first)
    keras_internals.set_global_seed_state(None)
    assert keras_internals.global_seed_state() is None


def test_data_adapters_take_a_py_dataset_and_a_generator() -> None:
    x, y = digits(20)

    class Two(keras.utils.PyDataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int):
            return x[index * 10 : (index + 1) * 10], y[index * 10 : (index + 1) * 10]

    adapter = keras_internals.PyDatasetAdapter(Two(), shuffle=False)
    assert adapter.num_batches == 2 and adapter.enqueuer is None
    assert adapter.get_tf_dataset().element_spec[0].shape.as_list() == [None, 64]
    generator = keras_internals.GeneratorDataAdapter(iter([(x, y), (x, y)]))
    assert generator.get_tf_dataset().element_spec[1].dtype == tf.int32


def test_tf_global_generator_is_found_without_being_created() -> None:
    generator = keras_internals.tf_global_generator()
    if generator is None:  # nothing in this process made one; finding it must not make one
        assert keras_internals.tf_global_generator() is None
        tf.random.set_global_generator(tf.random.Generator.from_seed(4))
    assert keras_internals.tf_global_generator() is tf.random.get_global_generator()
