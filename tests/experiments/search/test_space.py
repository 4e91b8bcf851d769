"""The search space: what a trial suggests (conditions respected), the grid, and how the
values land in the config."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from experiments.config.search_schema import SearchSection
from experiments.search.launch import Slot, TrialSpec, trial_config
from experiments.search.space import apply, grid, suggest


def _space(space: dict) -> dict:
    return SearchSection.model_validate({"space": space}).space


def _suggested(space: dict, fixed: dict | None = None) -> dict:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    if fixed:
        study.enqueue_trial(fixed)
    return suggest(study.ask(), _space(space))


def test_each_kind_of_distribution_is_suggested_in_its_bounds() -> None:
    values = _suggested(
        {
            "optimizer.learning_rate": {"float": [1e-4, 1e-1], "log": True},
            "model.params.dropout": {"float": [0.0, 0.5], "step": 0.1},
            "data.batch_size": {"int": [16, 64], "step": 16},
            "optimizer.name": {"categorical": ["adam", "sgd"]},
        }
    )
    assert 1e-4 <= values["optimizer.learning_rate"] <= 1e-1
    assert round(values["model.params.dropout"] * 10) == pytest.approx(
        values["model.params.dropout"] * 10
    )
    assert values["data.batch_size"] in (16, 32, 48, 64)
    assert values["optimizer.name"] in ("adam", "sgd")


def test_a_list_choice_is_suggested_by_its_json_and_decoded_back() -> None:
    values = _suggested({"model.params.hidden_units": {"categorical": [[64], [128, 64]]}})
    assert values["model.params.hidden_units"] in ([64], [128, 64])


@pytest.mark.parametrize(("name", "momentum"), [("sgd", True), ("adam", False)])
def test_a_conditional_path_is_suggested_only_when_its_condition_holds(
    name: str, momentum: bool
) -> None:
    space = {
        "optimizer.name": {"categorical": ["adam", "sgd"]},
        "optimizer.params.momentum": {"float": [0.0, 0.9], "when": {"optimizer.name": "sgd"}},
        "optimizer.params.nesterov": {
            "categorical": [True, False],
            "when": {"optimizer.params.momentum": [0.5]},  # never exactly: never suggested
        },
    }
    values = _suggested(space, {"optimizer.name": name})
    assert values["optimizer.name"] == name
    assert ("optimizer.params.momentum" in values) is momentum
    assert "optimizer.params.nesterov" not in values


def test_conditions_in_a_cycle_are_refused_by_name() -> None:
    space = _space(
        {
            "a.x": {"categorical": [1, 2], "when": {"a.y": 1}},
            "a.y": {"categorical": [1, 2], "when": {"a.x": 1}},
        }
    )
    with pytest.raises(ValueError, match=r"conditions of \['a.x', 'a.y'\] depend on each other"):
        suggest(optuna.create_study().ask(), space)


def test_the_grid_lists_every_value() -> None:
    assert grid(
        _space(
            {
                "data.batch_size": {"int": [16, 64], "step": 16},
                "model.params.dropout": {"float": [0.0, 0.2], "step": 0.1},
                "model.params.hidden_units": {"categorical": [[64], [128, 64]]},
            }
        )
    ) == {
        "data.batch_size": [16, 32, 48, 64],
        "model.params.dropout": [0.0, 0.1, 0.2],
        "model.params.hidden_units": ["[64]", "[128, 64]"],
    }


def test_apply_sets_dotted_paths_in_a_copy() -> None:
    base = {"optimizer": {"name": "adam", "params": None}, "model": {"name": "mlp"}}
    changed = apply(base, {"optimizer.params.momentum": 0.9, "model.params.dropout": 0.1})
    assert changed == {
        "optimizer": {"name": "adam", "params": {"momentum": 0.9}},
        "model": {"name": "mlp", "params": {"dropout": 0.1}},
    }
    assert base == {"optimizer": {"name": "adam", "params": None}, "model": {"name": "mlp"}}


def test_a_trial_config_and_its_spec_round_trip(tmp_path: Path) -> None:
    raw = trial_config(
        {"trainer": {"epochs": 2}},
        {"trainer.epochs": 3},
        slot=Slot("gpu0+1", ("0", "1")),
        run_name="s-4",
    )
    assert raw == {
        "trainer": {"epochs": 3, "distribute": "mirrored"},
        "tracking": {"run_name": "s-4", "system_metrics_scope": "own"},
    }
    spec = TrialSpec(
        "journal:///j",
        "s",
        7,
        raw,
        "sqlite:///m.db",
        "p",
        "log",
        ["val_loss"],
        ["minimize"],
        {"trainer.epochs": 3},
    )
    assert TrialSpec.read(spec.write(tmp_path / "spec.json")) == spec
