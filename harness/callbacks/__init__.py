"""Our Keras callbacks; each runs in both engines."""

from harness.callbacks.metrics_logger import MetricSink, MetricsLogger
from harness.callbacks.progress import ProgressLogger

__all__ = ["MetricSink", "MetricsLogger", "ProgressLogger"]
