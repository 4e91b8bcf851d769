"""Accelerator set-up that must happen before TensorFlow allocates anything."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any


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


def mirrored_strategy(devices: Sequence[str] | None = None) -> Any:
    """A `tf.distribute.MirroredStrategy` over `devices` (default: every visible GPU, or the
    CPU where there is none); one replica per device, the data's batch the global batch.
    Over one device it runs as that device alone would, plus synchronisation.

    Raises:
        ValueError: a device that is not visible (the message lists those that are).
    """
    import tensorflow as tf

    visible = [d.name for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "CPU")]
    if devices:
        names = [_visible_name(device, visible) for device in devices]
    else:
        gpus = [name for name in visible if ":GPU:" in name]
        names = gpus or [name for name in visible if ":CPU:" in name][:1]
    if len(set(names)) < len(names):
        raise ValueError(
            f"`devices` names a device twice ({', '.join(devices or [])}): list each once"
        )
    return tf.distribute.MirroredStrategy(names)


def _visible_name(device: str, visible: Sequence[str]) -> str:
    import tensorflow as tf

    try:
        spec = tf.DeviceSpec.from_string(device if "/" in device else f"/device:{device}")
    except ValueError:
        spec = None
    kind = (spec.device_type or "").upper() if spec else ""
    wanted = (
        f"/device:{kind}:{spec.device_index}" if spec and spec.device_index is not None else None
    )
    for name in visible:
        if wanted is not None and name.endswith(wanted):
            return name
    raise ValueError(
        f"`devices`: '{device}' is not a visible device. Visible devices: "
        f"{', '.join(visible)}. Name them as GPU:0, GPU:1 (or CPU:0)"
    )
