"""GPU set-up: memory growth, and a clear warning when it comes too late."""

from __future__ import annotations

from typing import Any

import pytest
import tensorflow as tf

from harness.devices import enable_memory_growth


def test_no_gpu_means_nothing_to_configure() -> None:
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this check is for machines without a GPU")
    assert enable_memory_growth() == []


def test_memory_growth_refused_after_initialisation_is_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TensorFlow refuses growth once a GPU is initialised; say so instead of staying silent."""
    gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")

    def refuse(device: Any, enable: bool) -> None:
        raise RuntimeError("Physical devices cannot be modified after being initialized")

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [gpu])
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth", refuse)
    with pytest.warns(UserWarning, match="could not turn on memory growth for /physical_device"):
        assert enable_memory_growth() == ["/physical_device:GPU:0"]
