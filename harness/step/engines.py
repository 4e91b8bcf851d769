"""The two engines: the only thing that differs between them is the compiled one-batch step.

- `fit` runs the model's own `train_step` / `test_step`: Keras's, or a user's override (the
  "custom train_step inside fit" pattern).
- `custom` runs our `tf.GradientTape` step (`harness.step.gradient_tape`), where gradient
  transforms and post-update work have their place.

The harness's loop runs either: same outer loop, same events, same data, same state.
"""

from __future__ import annotations

import warnings
from typing import Literal

import keras

from harness.step.gradient_tape import Step, make_test_step, make_train_step

EngineName = Literal["fit", "custom"]
ENGINES: tuple[EngineName, ...] = ("fit", "custom")


class Engine:
    """Supplies the one-batch train and test steps the loop compiles."""

    name: EngineName

    def train_step(self, model: keras.Model) -> Step:
        raise NotImplementedError

    def test_step(self, model: keras.Model) -> Step:
        raise NotImplementedError


class FitEngine(Engine):
    """The model's own `train_step` / `test_step`, as `Model.fit` runs them."""

    name: EngineName = "fit"

    def train_step(self, model: keras.Model) -> Step:
        return model.train_step

    def test_step(self, model: keras.Model) -> Step:
        return model.test_step


class GradientTapeEngine(Engine):
    """Our `tf.GradientTape` step; a model's own `train_step` override is not used."""

    name: EngineName = "custom"

    def train_step(self, model: keras.Model) -> Step:
        if overrides_train_step(model):
            warnings.warn(
                f"{type(model).__name__} overrides train_step, which engine: custom does not "
                "use (it runs its own GradientTape step); use engine: fit to run the override.",
                stacklevel=4,
            )
        return make_train_step(model)

    def test_step(self, model: keras.Model) -> Step:
        return make_test_step(model)


def overrides_train_step(model: keras.Model) -> bool:
    """Whether the model's class defines its own `train_step`."""
    return type(model).train_step is not keras.Model.train_step


def get_engine(engine: EngineName | Engine) -> Engine:
    """An engine by name (`fit`, `custom`), or the engine given."""
    if isinstance(engine, Engine):
        return engine
    if engine == "fit":
        return FitEngine()
    if engine == "custom":
        return GradientTapeEngine()
    raise ValueError(f"`engine` must be one of {ENGINES}. Received: engine={engine!r}")
