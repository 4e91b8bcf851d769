"""Every shipped example learns, and says what it reaches: a config that rots fails here.

Each config in `experiments/configs/` states on a `# Reaches:` line what it reaches and in
what time on 2 CPU cores, and the README repeats it. This trains each (the search's base
config, as one of its trials would; shortened where a full run is long) and checks it learns
above a floor a little under what the comment promises.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from experiments.config.loader import load_config
from experiments.run.run import run_experiment
from tests.paths import ROOT

CONFIGS = ROOT / "experiments" / "configs"
# config: (overrides that shorten it, metric, floor, higher is better)
SHIPPED = {
    "digits_mlp.yaml": ([], "val_accuracy", 0.97, True),
    "digits_cnn.yaml": ([], "val_accuracy", 0.97, True),
    "digits_cnn_search.yaml": (["trainer.epochs=4"], "val_accuracy", 0.93, True),
    "diabetes_regression.yaml": ([], "val_loss", 0.6, False),
}


def test_every_shipped_config_is_checked_and_says_what_it_reaches() -> None:
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(SHIPPED)
    readme = (ROOT / "README.md").read_text()
    for name in SHIPPED:
        text = (CONFIGS / name).read_text()
        reaches = re.search(r"^# Reaches: (.+)$", text, re.MULTILINE)
        assert reaches, f"{name} has no '# Reaches:' line"
        assert "2 CPU cores" in reaches.group(1), name
        assert re.search(rf"`{re.escape(name)}`[^\n]*reaches", readme), name


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_config_learns_above_its_floor(name: str, in_tmp: Path, mlflow_uri: str) -> None:
    overrides, metric, floor, higher = SHIPPED[name]
    config = load_config(
        CONFIGS / name,
        [
            *overrides,
            "trainer.progress=none",
            f"tracking.experiment=shipped-{Path(name).stem}",
            f"tracking.tensorboard_dir={in_tmp / 'tb'}",
            f"checkpoint.dir={in_tmp / 'ck' / '{run_id}'}",
        ],
    )
    result = run_experiment(config, tracking_uri=mlflow_uri)
    values = result.history[metric]
    best = max(values) if higher else min(values)
    assert (best >= floor) if higher else (best <= floor), (name, metric, values)
