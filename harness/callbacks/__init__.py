"""Our Keras callbacks, and the step events they get from the loop; each runs in both engines.

- `MetricsLogger`: metrics to a tracking sink on the global step; `ProgressLogger`: a bar in
  a terminal, lines otherwise; `PlateauReducer`, `EmaSnapshots`: a plateau multiplier on the
  schedule, the averaged weights saved.
- `events`: what the loop reports after each compiled call beyond Keras's `logs`
  (`on_train_step_end(StepEnd)`), delivered off the training thread.

May import: keras, NumPy, rich, `harness.logs`, `harness.schedules`, `harness.step`. Sinks are
passed in (any object with the methods a `tracking.Sink` has), never imported.
"""

from harness.callbacks.metrics_logger import MetricSink, MetricsLogger
from harness.callbacks.progress import ProgressLogger

__all__ = ["MetricSink", "MetricsLogger", "ProgressLogger"]
