"""`harness config` prints the resolved config; `harness schema` is what editors check against,
and the shipped configs point their editor at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from experiments.cli import main
from experiments.config.loader import load_config
from experiments.config.reference import SCHEMA_LINE, schema_json
from tests.paths import ROOT

CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*.yaml"))


def test_config_prints_the_resolved_config_with_every_default(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = ROOT / "experiments" / "configs" / "digits_cnn.yaml"
    assert main(["config", str(shipped), "trainer.epochs=3"]) == 0
    printed = capsys.readouterr().out
    resolved = yaml.safe_load(printed)
    assert resolved["trainer"]["epochs"] == 3  # the override applied
    assert resolved["checkpoint"]["keep_last"] == 2  # a default the file does not name
    assert resolved["data"]["shuffle"] is True
    # What it prints is a config: it loads back to the same one.
    again = in_tmp / "resolved.yaml"
    again.write_text(printed)
    assert load_config(again) == load_config(shipped, ["trainer.epochs=3"])
    assert main(["config", str(shipped), "trainer.epochz=3"]) == 2  # bad input: one line
    assert "unknown key" in capsys.readouterr().err


def test_the_shipped_schema_is_the_current_one(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = (ROOT / "docs" / "config.schema.json").read_text()
    assert shipped == schema_json(), "regenerate: harness schema --output docs/config.schema.json"
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == shipped
    assert main(["schema", "--output", str(in_tmp / "s.json")]) == 0
    assert (in_tmp / "s.json").read_text() == shipped


def _keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    keys = []
    for key, value in node.items():
        keys.append(f"{prefix}{key}")
        if key not in ("params", "init_args", "space", "sampler_params"):  # free-form
            keys += _keys(value, f"{prefix}{key}.")
    return keys


def _schema_keys(document: dict[str, Any]) -> set[str]:
    definitions = document["$defs"]

    def walk(node: dict[str, Any], prefix: str) -> set[str]:
        found = set()
        for key, value in node.get("properties", {}).items():
            found.add(f"{prefix}{key}")
            for option in [value, *value.get("anyOf", []), value.get("items", {})]:
                reference = option.get("$ref") if isinstance(option, dict) else None
                if reference:
                    found |= walk(definitions[reference.rsplit("/", 1)[1]], f"{prefix}{key}.")
        return found

    return walk(document, "")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_each_shipped_config_names_the_schema_and_every_key_is_in_it(config: Path) -> None:
    import json

    text = config.read_text()
    assert text.splitlines()[0] == SCHEMA_LINE
    assert (config.parent / "../../docs/config.schema.json").resolve().is_file()
    known = _schema_keys(json.loads(schema_json()))
    described = json.dumps(json.loads(schema_json())["$defs"]["TrainerSection"])
    assert '"description"' in described  # keys come with what they mean
    missing = [key for key in _keys(yaml.safe_load(text)) if key not in known]
    assert not missing, missing


def test_the_config_reference_is_the_schema_and_every_key_says_what_it_means() -> None:
    from experiments.config.reference import reference_markdown, schema

    shipped = (ROOT / "docs" / "config.md").read_text()
    assert shipped == reference_markdown(), (
        "regenerate: harness schema --markdown --output docs/config.md"
    )
    document = schema()
    for name, node in [("config", document), *document["$defs"].items()]:
        for key, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{key} has no description"
    assert "| `trainer.accumulation_steps` | int | `1` |" in shipped
    readme = (ROOT / "README.md").read_text()
    assert "](docs/config.md)" in readme  # the README links the reference, not a copy
    assert "steps_per_execution: 1    #" not in readme  # the old hand-written copy is gone


def test_the_readme_s_example_is_the_shipped_config() -> None:
    from experiments.config.schema import ExperimentConfig

    readme = (ROOT / "README.md").read_text()
    start = readme.index("```yaml\n# experiments/configs/digits_cnn.yaml")
    block = readme[start + len("```yaml\n") : readme.index("```\n", start + 8)]
    shown = ExperimentConfig.model_validate(yaml.safe_load(block))
    assert shown == load_config(ROOT / "experiments" / "configs" / "digits_cnn.yaml")
