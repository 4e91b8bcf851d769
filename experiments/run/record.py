"""What a run says about itself in MLflow: its description and its data sets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from experiments.config.schema import ExperimentConfig
from experiments.zoo import registry
from tracking import DatasetRecord


def description(config: ExperimentConfig, *, command: str | None) -> str:
    """The run's description (`mlflow.note.content`): the command and the main settings."""
    data, opt, trainer = config.data, config.optimizer, config.trainer
    split = f", validation_split {data.validation_split}" if data.validation_split else ""
    rows = [
        ("engine", trainer.engine),
        ("model", _named(config.model.name, config.model.params)),
        ("data", f"{_named(data.name, data.params)}, batch {data.batch_size}{split}"),
        ("optimizer", f"{_named(opt.name, opt.params)}, learning rate {_rate(config)}"),
        ("loss", _spec(config.loss)),
        ("metrics", ", ".join(_spec(metric) for metric in config.metrics) or "none"),
        ("epochs", f"{trainer.epochs}, seed {trainer.seed}"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    head = f"`{command}`\n\n" if command else ""
    return f"{head}| setting | value |\n| --- | --- |\n{table}\n"


def _rate(config: ExperimentConfig) -> str:
    rate, data = config.optimizer.learning_rate, config.data
    if data.lr_scaling == "none":
        return f"{rate}"
    return (
        f"{rate * data.lr_scale:g} ({rate} × batch {data.batch_size} / reference "
        f"{data.reference_batch_size}, linear scaling)"
    )


def _spec(spec: Any) -> str:
    return f"`{spec}`" if isinstance(spec, str) else _named(spec.name, spec.params)


def _named(name: str, params: Mapping[str, Any]) -> str:
    if not params:
        return f"`{name}`"
    return f"`{name}` ({', '.join(f'{k}={v}' for k, v in params.items())})"


def dataset_records(config: ExperimentConfig, data: Any) -> list[DatasetRecord]:
    """The training (and validation) data as `DatasetRecord`s, arrays where there are arrays."""
    source = registry.DATASETS.get(config.data.name, config.data.name)
    records = []
    for context, part in (("training", data.train), ("validation", data.validation)):
        if part is None:
            continue
        arrays = getattr(part, "arrays", None)
        name = config.data.name if context == "training" else f"{config.data.name}-validation"
        records.append(
            DatasetRecord(
                name,
                source,
                context=context,  # type: ignore[arg-type]
                features=None if arrays is None else arrays[0],
                targets=None if arrays is None else arrays[1],
                num_examples=getattr(part, "num_examples", None),
            )
        )
    return records
