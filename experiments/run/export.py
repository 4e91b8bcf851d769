"""The run's models in MLflow: the last, and the best by `checkpoint.monitor`, each with its
EMA twin.

Each is a logged model in MLflow's Keras flavor (`data/model.keras`, signature and input
example, the user's code under `code/`) holding a `model.export` SavedModel for serving
(`saved_model/`): `model` and `model_ema` are the weights training ended with, `best_model` and
`best_model_ema` those of the kept checkpoint that scored best, with that epoch's metrics.
"""

from __future__ import annotations

import warnings
from typing import Any

from experiments.run.prepare import Prepared


def log_models(prepared: Prepared, sink: Any, final: dict[str, float], store: Any) -> None:
    """Log the last models (`final`: the last epoch's metrics), then the best ones.

    The best weights are loaded into `prepared.model` (and its EMA) from the best checkpoint
    in `store`, so call this last.
    """
    example = input_example(prepared)
    step = int(prepared.model.optimizer.iterations.numpy())
    _log_with_ema(prepared, sink, "model", example, step, final)
    monitor = prepared.config.checkpoint.monitor
    if monitor is None:
        return
    best = store.best()
    if best is None:
        warnings.warn(
            f"no checkpoint recorded checkpoint.monitor '{monitor}', so no best_model is "
            f"logged: name an epoch metric the run logs (it logged: {', '.join(sorted(final))})",
            stacklevel=2,
        )
        return
    from harness.checkpoints import load_weights

    _, state = store.load(best.path)
    load_weights(state, prepared.model, ema=prepared.ema)
    _log_with_ema(prepared, sink, "best_model", example, best.step, best.metrics)


def _log_with_ema(
    prepared: Prepared, sink: Any, name: str, example: Any, step: int, metrics: dict[str, float]
) -> None:
    model = prepared.model
    plain = {key: value for key, value in metrics.items() if "_ema_" not in key}
    sink.log_model(model, name=name, input_example=example, step=step, metrics=plain)
    if prepared.ema is not None:
        averaged = {key: value for key, value in metrics.items() if key.startswith("val_ema_")}
        with prepared.ema.swapped():  # the averaged weights, as their own logged model
            sink.log_model(
                model, name=f"{name}_ema", input_example=example, step=step, metrics=averaged
            )


def input_example(prepared: Prepared) -> Any:
    """A few training inputs (for the signature and the model page), or a zero batch."""
    import numpy as np

    sample = prepared.sample_input
    if sample is not None:
        return sample[:5] if isinstance(sample, np.ndarray) else sample
    # Generators cannot be peeked; a zero batch of the model's input shape still gives a signature.
    model_input = prepared.model.inputs[0]
    shape = tuple(1 if d is None else d for d in model_input.shape)
    return np.zeros(shape, dtype=model_input.dtype)
