"""Accelerator set-up that must happen before TensorFlow allocates anything."""

from __future__ import annotations

import warnings


def enable_memory_growth() -> list[str]:
    """Let each visible GPU allocate memory as needed instead of all of it at start.

    Several trials share a machine (one process per GPU, `CUDA_VISIBLE_DEVICES` set before
    TensorFlow is imported); growth keeps a process from holding memory it does not use.
    Returns the names of the GPUs configured (none on a CPU-only machine).
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as error:
            warnings.warn(
                f"could not turn on memory growth for {gpu.name} ({error}): TensorFlow had "
                "already initialised the GPU, so this process may hold all of its memory. "
                "Call enable_memory_growth() before anything else uses TensorFlow.",
                stacklevel=2,
            )
    return [gpu.name for gpu in gpus]
