"""Seeding and determinism."""

from __future__ import annotations


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and TensorFlow; with `deterministic`, make TF ops deterministic.

    Op determinism is process-wide and cannot be switched off again, which is why trials
    run in fresh processes.
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
