"""The few private Keras pieces the custom engine reuses, kept in one place.

The GradientTape engine batches, shuffles and iterates data exactly as `fit()` does by
reusing Keras's own epoch iterator (arrays, `tf.data`, `PyDataset` with workers, generators
with `steps_per_epoch`, distribution). Re-implementing that would drift from `fit()`, and
identical data order is what makes both engines interchangeable. Keras is pinned to a minor
version in `pyproject.toml`; if these imports move, only this module changes.
"""

from __future__ import annotations

from typing import Any

from keras.src.backend.tensorflow.trainer import TFEpochIterator, reduce_per_replica
from keras.src.losses.loss import unscale_loss_for_distribution

__all__ = [
    "TFEpochIterator",
    "reduce_per_replica",
    "unscale_loss_for_distribution",
    "symbolic_build",
    "compute_loss",
    "loss_tracker",
]


def symbolic_build(model: Any, iterator: TFEpochIterator) -> None:
    """Build the model, its compiled metrics and optimizer variables before tracing."""
    model._maybe_symbolic_build(iterator=iterator)


def compute_loss(
    model: Any, x: Any, y: Any, y_pred: Any, sample_weight: Any, *, training: bool
) -> Any:
    """`model.compute_loss`, also for user overrides with the pre-3.3 signature (no `training`)."""
    return model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )


def loss_tracker(model: Any) -> Any:
    """The `Mean` metric `fit()` reports as `loss`."""
    return model._loss_tracker
