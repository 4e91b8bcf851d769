"""`trainer.seed` + `deterministic` reproduce a run; closing a run is not interrupted."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from experiments.config.loader import load_config
from experiments.run.prepare import prepare
from experiments.run.signals import Terminated, signals_deferred
from harness import train
from tests.experiments.configs import write_config


def _losses(tmp: Path, seed: int, engine: str) -> list[float]:
    # Dropout and per-epoch shuffling both draw random numbers, so the seed matters.
    config = load_config(
        write_config(
            tmp,
            {
                "model.params": {"input_shape": [64], "hidden_units": [32], "dropout": 0.3},
                "trainer.seed": seed,
                "trainer.deterministic": True,
                "trainer.engine": engine,
            },
        )
    )
    prepared = prepare(config)
    history = train(prepared.model, prepared.data, engine=engine, epochs=2)
    return history.history["loss"]


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_same_seed_same_losses_other_seed_other_losses(engine: str, tmp_path: Path) -> None:
    first = _losses(tmp_path, 11, engine)
    assert _losses(tmp_path, 11, engine) == first
    assert _losses(tmp_path, 12, engine) != first


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)]
)
def test_signals_wait_until_the_block_is_done(signum: int, raised: type) -> None:
    finished = []
    with pytest.raises(raised):
        with signals_deferred():
            os.kill(os.getpid(), signum)
            finished.append(True)  # still runs: the signal was held
    assert finished == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_handlers_are_restored_when_the_block_raises() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError):
        with signals_deferred():
            raise RuntimeError("close failed")
    assert signal.getsignal(signal.SIGTERM) == before
