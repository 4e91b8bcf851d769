"""The composition root of a tracked run: config → data, model, callbacks → engine → sinks.

Everything that bad input can break is resolved in `prepare` before an MLflow run exists, so a
bad config never leaves a half-written run behind.
"""

from __future__ import annotations

import random
import signal
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from experiments import registry
from experiments.config import ExperimentConfig, flatten
from experiments.errors import UsageError
from experiments.tracking_setup import resolve_tracking_uri, run_tags


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; handled like Ctrl-C so the run ends KILLED, not RUNNING."""


@dataclass
class Prepared:
    """A validated experiment, ready to train."""

    config: ExperimentConfig
    model: Any
    data: Any
    callbacks: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    tensorboard_dir: Path
    history: dict[str, list[float]]


def prepare(config: ExperimentConfig) -> Prepared:
    """Resolve names, build data and model, compile; raises UsageError on bad input."""
    from harness import DataError, prepare_data, seed_everything
    from harness.devices import enable_memory_growth

    enable_memory_growth()  # before anything allocates on a GPU

    model_factory = registry.resolve_factory(config.model.name, registry.MODELS, what="model.name")
    data_factory = registry.resolve_factory(config.data.name, registry.DATASETS, what="data.name")
    opt = config.optimizer
    optimizer = registry.build_optimizer(opt.name, opt.learning_rate, opt.params)
    loss = registry.resolve_loss(config.loss)
    metrics = [registry.resolve_metric(name, i) for i, name in enumerate(config.metrics)]
    callbacks = [
        registry.build_callback(spec.class_path, spec.init_args, i)
        for i, spec in enumerate(config.callbacks)
    ]
    seed_everything(config.trainer.seed, deterministic=config.trainer.deterministic)
    source = _call_factory(data_factory, config.data.params, what="data")
    try:
        data = prepare_data(
            source,
            batch_size=config.data.batch_size,
            validation_split=config.data.validation_split,
            shuffle=config.data.shuffle,
            drop_remainder=config.data.drop_remainder,
            seed=config.trainer.seed,
        )
    except DataError as error:
        raise UsageError(f"data ({config.data.name}): {error}") from None
    model = _call_factory(model_factory, config.model.params, what="model")
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        steps_per_execution=config.trainer.steps_per_execution,
        jit_compile=config.trainer.jit_compile,
    )
    return Prepared(config, model, data, callbacks)


def _call_factory(factory: Any, params: dict[str, Any], *, what: str) -> Any:
    try:
        return factory(**params)
    except TypeError as error:
        raise UsageError(
            f"{what}.params: {getattr(factory, '__name__', factory)} rejected {params}: {error}. "
            f"Use the factory's own argument names"
        ) from None


def run_experiment(
    config: ExperimentConfig,
    *,
    tracking_uri: str | None = None,
    config_path: str | None = None,
) -> RunResult:
    """Train one experiment and track it in MLflow and TensorBoard.

    Example:
        >>> result = run_experiment(load_config("experiments/configs/digits_mlp.yaml"))
    """
    uri = resolve_tracking_uri(tracking_uri, config.tracking.uri)
    prepared = prepare(config)  # seeds Python's `random`, among others
    from tracking import FanOutSink, MlflowSink, TensorBoardSink

    tags = run_tags(engine=config.trainer.engine, config_path=config_path)
    try:
        # MLflow draws random run names from Python's `random`: with the seeded state every
        # run of a config would get the same name, and creating the run would shift the seeded
        # sequence training sees. Draw it from fresh entropy and put the seeded state back.
        seeded = random.getstate()
        random.seed()
        try:
            mlflow_sink = MlflowSink.start(
                uri,
                experiment=config.tracking.experiment,
                run_name=config.tracking.run_name,
                tags=tags,
            )
        finally:
            random.setstate(seeded)
    except Exception as error:  # unreachable server, unwritable store, deleted experiment
        text = str(error).strip() or repr(error)
        summary = text.splitlines()[0]
        summary = summary if len(summary) <= 200 else summary[:200] + "…"
        raise UsageError(
            f"cannot start an MLflow run at '{uri}': {summary}. Check that the store or server "
            "is reachable, or pick another with --tracking-uri, tracking.uri or "
            "MLFLOW_TRACKING_URI"
        ) from None
    tb_dir = Path(config.tracking.tensorboard_dir) / config.tracking.experiment / mlflow_sink.run_id
    sink = FanOutSink([mlflow_sink, TensorBoardSink(tb_dir)])
    sink.set_tags({"harness.tensorboard_dir": str(tb_dir.resolve())})
    try:
        with _sigterm_as_interrupt():
            history = _train_and_log(prepared, sink)
    except KeyboardInterrupt:
        sink.close("KILLED", error="interrupted (Ctrl-C or SIGTERM)")
        raise
    except BaseException:
        sink.close("FAILED", error=traceback.format_exc())
        raise
    sink.close("FINISHED")
    return RunResult(mlflow_sink.run_id, mlflow_sink.experiment_id, uri, tb_dir, history)


def _train_and_log(prepared: Prepared, sink: Any) -> dict[str, list[float]]:
    from harness import train
    from harness.callbacks import MetricsLogger, ProgressLogger

    config = prepared.config
    sink.log_params(flatten(config))
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        sink.log_artifact(config_file)
    trainer = config.trainer
    ours = [
        MetricsLogger(sink, log_every_n_steps=trainer.log_every_n_steps),
        ProgressLogger(trainer.progress),
    ]
    history = train(
        prepared.model,
        prepared.data,
        engine=trainer.engine,
        epochs=trainer.epochs,
        steps_per_epoch=trainer.steps_per_epoch,
        validation_steps=trainer.validation_steps,
        shuffle=config.data.shuffle,
        callbacks=[*ours, *prepared.callbacks],
    )
    values = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    _log_history(sink, values)
    sink.log_model(prepared.model, input_example=_input_example(prepared))
    return values


def _log_history(sink: Any, history: dict[str, list[float]]) -> None:
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.csv"
        frame = pd.DataFrame(history)
        frame.insert(0, "epoch", range(len(frame)))
        frame.to_csv(path, index=False)
        sink.log_artifact(path)


def _input_example(prepared: Prepared) -> Any:
    import numpy as np

    sample = prepared.data.sample_input
    if sample is not None:
        return sample[:5] if isinstance(sample, np.ndarray) else sample
    # Generators cannot be peeked; a zero batch of the model's input shape still gives a signature.
    model_input = prepared.model.inputs[0]
    shape = tuple(1 if d is None else d for d in model_input.shape)
    return np.zeros(shape, dtype=model_input.dtype)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
