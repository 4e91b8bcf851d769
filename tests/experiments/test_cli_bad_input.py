"""Every kind of bad input: one line on stderr, exit status 2, no traceback, no MLflow run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.cli import main
from tests.experiments.configs import write_config

CASES = [
    # (id, config changes, extra CLI args, expected fragments of the one line)
    (
        "unknown-key",
        {"trainer.epochz": 3},
        [],
        ["unknown key 'trainer.epochz'", "Did you mean 'trainer.epochs'?", "line "],
    ),
    (
        "unknown-section",
        {"optimiser": {"name": "sgd"}},
        [],
        ["unknown key 'optimiser'", "Did you mean 'optimizer'?"],
    ),
    (
        "wrong-type",
        {"trainer.epochs": "many"},
        [],
        ["trainer.epochs", "valid integer", "received 'many'"],
    ),
    (
        "out-of-range",
        {"trainer.epochs": 0},
        [],
        ["trainer.epochs", "greater than or equal to 1", "received 0"],
    ),
    (
        "out-of-range-split",
        {"data.validation_split": 1.5},
        [],
        ["data.validation_split", "less than 1", "received 1.5"],
    ),
    (
        "unknown-schedule",
        {"schedule": {"name": "cosinus"}},
        [],
        ["schedule.name", "'constant', 'step', 'exponential'", "received 'cosinus'"],
    ),
    (
        "setting-of-another-schedule",
        {"schedule": {"name": "cosine", "factor": 0.5}},
        [],
        ["schedule cosine takes no factor", "its settings are alpha, decay_steps, restarts"],
    ),
    (
        "warmup-longer-than-the-run",
        {"schedule": {"name": "cosine", "warmup_steps": 1000}},
        [],
        ["schedule.warmup_steps (1000) must be shorter than the run (16 optimizer updates"],
    ),
    (
        "plateau-factor",
        {"plateau": {"factor": 2}},
        [],
        ["plateau.factor", "less than 1", "received 2"],
    ),
    (
        "loss-bad-params",
        {"loss": {"name": "sparse_categorical_crossentropy", "params": {"from_logitz": True}}},
        [],
        ["loss.params: SparseCategoricalCrossentropy rejected", "from_logitz"],
    ),
    (
        "params-for-a-function",
        {"loss": {"name": "tests.experiments.user_code:logits_crossentropy", "params": {"k": 2}}},
        [],
        ["loss: 'tests.experiments.user_code:logits_crossentropy' is a function", "a class"],
    ),
    (
        "negative-system-metrics-interval",
        {"tracking.system_metrics_every_s": -1},
        [],
        ["tracking.system_metrics_every_s", "greater than or equal to 0", "received -1"],
    ),
    (
        "bad-engine",
        {"trainer.engine": "keras"},
        [],
        ["trainer.engine", "'fit' or 'custom'", "received 'keras'"],
    ),
    (
        "unknown-model",
        {"model.name": "mlpp"},
        [],
        ["model.name: unknown name 'mlpp'", "Valid names: cnn, mlp, regression_mlp"],
    ),
    ("unknown-data", {"data.name": "mnist"}, [], ["data.name: unknown name 'mnist'", "digits"]),
    (
        "unknown-optimizer",
        {"optimizer.name": "adamz"},
        [],
        ["unknown optimizer 'adamz'", "adam", "sgd"],
    ),
    (
        "unknown-loss",
        {"loss": "cross_entropy_loss"},
        [],
        ["loss: unknown loss 'cross_entropy_loss'", "sparse_categorical_crossentropy"],
    ),
    ("unknown-metric", {"metrics": ["acuracy"]}, [], ["metrics[0]: unknown metric 'acuracy'"]),
    (
        "import-module",
        {"model.name": "no_such_pkg.models:build"},
        [],
        ["cannot import module 'no_such_pkg.models'"],
    ),
    (
        "import-attr",
        {"model.name": "experiments.zoo.models:build_mpl"},
        [],
        ["has no attribute 'build_mpl'", "Did you mean 'experiments.zoo.models:build_mlp'?"],
    ),
    (
        "callback-path",
        {"callbacks": [{"class_path": "keras.callbacks.EarlyStop"}]},
        [],
        ["callbacks[0].class_path", "has no attribute 'EarlyStop'", "EarlyStopping"],
    ),
    (
        "callback-args",
        {
            "callbacks": [
                {"class_path": "keras.callbacks.EarlyStopping", "init_args": {"patiense": 2}}
            ]
        },
        [],
        ["callbacks[0].init_args", "EarlyStopping rejected", "patiense"],
    ),
    (
        "model-params",
        {"model.params": {"hidden_unitz": [4]}},
        [],
        ["model.params", "build_mlp rejected", "hidden_unitz"],
    ),
    ("missing-section", {"model": None}, [], ["model"]),
    (
        "bad-override",
        {},
        ["trainer.epochs"],
        ["malformed override 'trainer.epochs'", "trainer.epochs=3"],
    ),
    (
        "override-value-not-yaml",
        {},
        ["optimizer.params={weight_decay: 1e-4"],
        ["override 'optimizer.params={weight_decay: 1e-4'", "not valid YAML", "quote"],
    ),
    (
        "override-unknown-key",
        {},
        ["trainer.epoch=3"],
        ["command-line override", "unknown key 'trainer.epoch'", "trainer.epochs"],
    ),
    (
        "override-range",
        {},
        ["data.batch_size=0"],
        ["command-line override", "data.batch_size", "received 0"],
    ),
    (
        "tracking-uri",
        {},
        ["--tracking-uri", "mlflow.db"],
        ["tracking URI 'mlflow.db'", "sqlite:///mlflow.db"],
    ),
    (
        "drop-everything",
        {"data.drop_remainder": True, "data.batch_size": 1000},
        [],
        ["drop_remainder", "lower data.batch_size"],
    ),
    (
        "factory-value",
        {"model.params": {"input_shape": [64], "dropout": 1.5}},
        [],
        ["model.params", "build_mlp rejected"],
    ),
    (
        "model-data-mismatch",
        {"model.params": {"input_shape": [32]}},
        [],
        ["model (mlp) does not accept the inputs of data (digits)", "input_shape"],
    ),
    (
        "steps-not-whole-executions",
        {"trainer.steps_per_epoch": 10, "trainer.steps_per_execution": 4},
        [],
        ["must be a multiple of trainer.steps_per_execution", "steps_per_epoch=12"],
    ),
    (
        "linear-lr-scaling-without-reference",
        {"data.lr_scaling": "linear"},
        [],
        ["data.lr_scaling linear", "needs data.reference_batch_size", "reference_batch_size=32"],
    ),
    (
        "contradictory-clipping",
        {"optimizer.clipnorm": 1.0, "optimizer.global_clipnorm": 1.0},
        [],
        ["optimizer: clipnorm and global_clipnorm contradict", "keep one of clipnorm"],
    ),
    (
        "decay-set-twice",
        {"optimizer.weight_decay": 0.01, "optimizer.params": {"weight_decay": 0.1}},
        [],
        ["optimizer.params.weight_decay duplicates optimizer.weight_decay", "set it once"],
    ),
    (
        "freeze-unknown-layer",
        {"finetune": {"freeze": ["conv*"]}},
        [],
        ["finetune.freeze: the pattern 'conv*' matches no layer", "layers: inputs, flatten"],
    ),
    (
        "layer-lr-unknown-layer",
        {"finetune": {"layer_lr": {"head": 0.1}}},
        [],
        ["finetune.layer_lr: the pattern 'head' matches no layer", "probabilities"],
    ),
    (
        "decay-exclude-unknown-weight",
        {"optimizer.weight_decay": 0.01, "optimizer.weight_decay_exclude": ["*/gamma"]},
        [],
        ["optimizer.weight_decay_exclude: the pattern '*/gamma' matches no weight", "/kernel"],
    ),
    (
        "unfreeze-without-freeze",
        {"finetune": {"unfreeze_at_epoch": 2}},
        [],
        ["finetune.unfreeze_at_epoch unfreezes the layers of finetune.freeze, which is empty"],
    ),
    (
        "bad-on-nan",
        {"trainer.on_nan": "ignore"},
        [],
        ["trainer.on_nan", "'raise', 'stop' or 'skip_step'"],
    ),
    (
        "bad-precision",
        {"trainer.precision": "float16"},
        [],
        ["trainer.precision", "'float32', 'mixed_float16' or 'mixed_bfloat16'"],
    ),
    (
        "devices-without-mirrored",
        {"trainer.devices": ["CPU:0", "CPU:1"]},
        [],
        ["trainer.devices (CPU:0, CPU:1) picks the devices of trainer.distribute=mirrored"],
    ),
    (
        "device-not-visible",
        {"trainer.distribute": "mirrored", "trainer.devices": ["GPU:5"]},
        [],
        ["trainer.devices: 'GPU:5' is not a visible device", "/device:CPU:1"],
    ),
    (
        "batch-not-split-evenly",
        {"trainer.distribute": "mirrored", "trainer.devices": ["CPU:0", "CPU:1"]},
        ["data.batch_size=31"],
        ["data.batch_size (31) must be a multiple of the 2 devices", "data.batch_size=32"],
    ),
    (
        "override-list-index",
        {"callbacks": [{"class_path": "keras.callbacks.EarlyStopping"}]},
        ["callbacks.3.init_args.patience=2"],
        ["'3' is not an index of a list of 1 items"],
    ),
    (
        "tensorboard-dir-is-a-file",
        {},
        ["tracking.tensorboard_dir=tiny.yaml"],
        ["tracking.tensorboard_dir: cannot create 'tiny.yaml'"],
    ),
    (
        "checkpoint-dir-is-a-file",
        {},
        ["checkpoint.dir=tiny.yaml"],
        ["checkpoint.dir: cannot create 'tiny.yaml' (it is a file)"],
    ),
    (
        "checkpoint-dir-under-a-file",
        {},
        ["checkpoint.dir=tiny.yaml/{run_id}"],
        ["checkpoint.dir: cannot create 'tiny.yaml' (it is a file)"],
    ),
    (
        "checkpoint-dir-not-writable",
        {},
        ["checkpoint.dir=/proc/harness-{run_id}"],
        ["checkpoint.dir: cannot create '/proc/harness-'", "in '/proc'"],
    ),
    (
        "seed-beyond-32-bits",
        {"trainer.seed": 1180591620717411303424},
        [],
        ["trainer.seed", "less than or equal to 4294967295", "received 1180591620717411303424"],
    ),
    (
        "infinite-learning-rate",
        {"optimizer.learning_rate": float("inf")},
        [],
        ["optimizer.learning_rate", "finite number"],
    ),
    (
        "nan-learning-rate",
        {},
        ["optimizer.learning_rate=.nan"],
        ["optimizer.learning_rate", "finite number"],
    ),
    (
        "epochs-beyond-any-run",
        {},
        ["trainer.epochs=100000000000"],
        ["trainer.epochs", "less than or equal to 1000000000"],
    ),
    (
        "epochs-beyond-any-number",
        {},
        ["trainer.epochs=1e29"],
        ["trainer.epochs", "received 1e+29"],
    ),
    (
        "module-that-raises-on-import",
        {"model.name": "tests.experiments.raising_module:build"},
        [],
        [
            "model.name: importing module 'tests.experiments.raising_module'",
            "raised RuntimeError: broken on import",
            "--verbose shows the traceback",
        ],
    ),
    (
        "model-factory-that-raises",
        {"model": {"name": "tests.experiments.user_code:broken_factory"}},
        [],
        ["model: the factory broken_factory raised RuntimeError: the factory broke"],
    ),
    (
        "data-factory-that-raises",
        {"data.name": "tests.experiments.user_code:broken_factory"},
        [],
        ["data: the factory broken_factory raised RuntimeError: the factory broke"],
    ),
    (
        "callback-that-raises",
        {"callbacks": [{"class_path": "tests.experiments.user_code:BrokenCallback"}]},
        [],
        ["callbacks[0].init_args: BrokenCallback(...) raised RuntimeError: the callback broke"],
    ),
    (
        "label-outside-the-model-s-classes",
        {"data": {"name": "tests.experiments.user_code:digits_with_a_stray_label"}},
        [],
        ["takes class indices in [0, 10)", "the training labels hold 56 (example 37)"],
    ),
    (
        "metric-param-of-the-wrong-type",
        {"metrics": [{"name": "sparse_top_k_categorical_accuracy", "params": {"k": "abc"}}]},
        [],
        ["metrics[0] (sparse_top_k_categorical_accuracy) on two examples", "TypeError"],
    ),
    (
        "refused-tracking-server",
        {},
        ["--tracking-uri", "http://127.0.0.1:9"],
        ["cannot start an MLflow run at 'http://127.0.0.1:9'", "(connection refused)"],
    ),
]


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


@pytest.mark.parametrize(
    ("changes", "extra", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_one_line_exit_2_and_no_run(
    changes, extra, fragments, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(in_tmp, changes)
    if changes.get("model", "keep") is None:
        text = config.read_text().replace("model: null\n", "")
        config.write_text(text)
    db = in_tmp / "store.db"
    args = ["run", str(config), *extra]
    if "--tracking-uri" not in extra:
        args += ["--tracking-uri", f"sqlite:///{db}"]
    code, err = _run_cli(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0]
    assert not db.exists(), "no MLflow store (hence no run) may be created on bad input"
    assert not (in_tmp / "mlflow.db").exists()
    assert not (in_tmp / "runs").exists()
    assert not (in_tmp / "checkpoints").exists()  # a run's folders appear once it exists


def test_malformed_yaml_names_the_line(in_tmp: Path, capsys) -> None:
    path = in_tmp / "broken.yaml"
    path.write_text("model:\n  name: mlp\ndata: [digits\ntrainer:\n  epochs: 2\n")
    code, err = _run_cli(["run", str(path)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "malformed YAML at line 4" in err


def test_missing_config_file(in_tmp: Path, capsys) -> None:
    code, err = _run_cli(["run", "nope/missing.yaml"], capsys)
    assert code == 2
    assert err.strip() == (
        "harness: error: config file not found: 'nope/missing.yaml'. Pass the path of a YAML "
        "config, e.g. experiments/configs/digits_mlp.yaml"
    )


def test_config_that_is_not_a_mapping(in_tmp: Path, capsys) -> None:
    path = in_tmp / "list.yaml"
    path.write_text("- 1\n- 2\n")
    code, err = _run_cli(["run", str(path)], capsys)
    assert code == 2
    assert "must be a YAML mapping" in err and "Received list" in err


def test_missing_cli_argument_is_one_line(capsys) -> None:
    code, err = _run_cli(["run"], capsys)
    assert code == 2
    assert (
        err.strip() == "harness run: error: Missing argument 'config'. (see 'harness run --help')"
    )


def test_unknown_command_is_one_line(capsys) -> None:
    code, err = _run_cli(["train"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "No such command 'train'" in err


def test_installed_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"trainer.epochs": -1})
    harness = Path(sys.executable).with_name("harness")
    done = subprocess.run(
        [str(harness), "run", str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "trainer.epochs" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_override_reaches_into_a_list_item(in_tmp: Path) -> None:
    from experiments.config.loader import load_config

    config = write_config(
        in_tmp,
        {
            "callbacks": [
                {"class_path": "keras.callbacks.EarlyStopping", "init_args": {"patience": 1}}
            ]
        },
    )
    loaded = load_config(config, ["callbacks.0.init_args.patience=5"])
    assert loaded.callbacks[0].init_args == {"patience": 5}


def test_unreadable_config_file(in_tmp: Path, capsys) -> None:
    path = in_tmp / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00model")
    code, err = _run_cli(["run", str(path)], capsys)
    assert code == 2
    assert "cannot read config file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-4", 1e-4), ("1e-05", 1e-05), ("3.0e+2", 300.0), ("010", 10), ("0x10", 16), (".5", 0.5)],
)
def test_numbers_read_as_users_mean_them_in_files_and_overrides(
    text: str, value: float, in_tmp: Path
) -> None:
    """YAML 1.2: PyYAML alone reads `1e-4` as a string and `010` as octal 8."""
    from experiments.config.loader import load_config

    config = write_config(in_tmp)
    with_decay = f"  learning_rate: 0.01\n  params: {{weight_decay: {text}}}"
    config.write_text(config.read_text().replace("  learning_rate: 0.01", with_decay))
    from_file = load_config(config)
    from_override = load_config(write_config(in_tmp), [f"optimizer.params.weight_decay={text}"])
    for loaded in (from_file, from_override):
        decay = loaded.optimizer.params["weight_decay"]
        assert decay == value and type(decay) is type(value)


@pytest.mark.parametrize("command", [["resume", "0" * 32], ["runs"], ["runs", "--study", "s"]])
def test_commands_that_read_a_store_never_create_one(
    command: list[str], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _run_cli([*command, "--tracking-uri", "sqlite:///mlflow.db"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "there is no MLflow store at 'sqlite:///mlflow.db'" in line
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (  # a second section of the same name would silently replace the first
            "model: {name: mlp}\ndata: {name: digits}\nloss: mse\ntrainer:\n  seed: 7\n"
            "tracking: {experiment: t}\ntrainer:\n  epochs: 1\n",
            ["line 7: the key 'trainer' appears twice in one section (first at line 4)"],
        ),
        (
            "model: {name: mlp}\nloss: mse\ndata:\n  name: digits\n  "
            + "x: "
            + "[" * 20000
            + "]" * 20000
            + "\n",
            ["the config is too large to be one (it nests deeper than 100 levels)"],
        ),
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]\n"
                for i in range(8)
            ),
            ["the config is too large to be one (its aliases expand to more than 100,000"],
        ),
    ],
    ids=["duplicate-section", "nested-20000-deep", "alias-bomb"],
)
def test_yaml_that_would_mislead_or_explode_is_one_short_line(
    text: str, fragments: list[str], in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = in_tmp / "odd.yaml"
    path.write_text(text)
    code, err = _run_cli(["run", str(path), "--tracking-uri", "sqlite:///m.db"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert len(line) < 400
    for fragment in fragments:
        assert fragment in line
    assert list(in_tmp.iterdir()) == [path]


def test_an_override_s_long_value_is_quoted_short(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(in_tmp)
    long_value = "x" * 100_000
    code, err = _run_cli(["run", str(config), f"trainer.epochs={long_value}"], capsys)
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "trainer.epochs" in line and "(100,002 characters)" in line and len(line) < 500


def test_verbose_shows_the_traceback_of_the_user_s_own_code(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(in_tmp, {"model": {"name": "tests.experiments.user_code:broken_factory"}})
    args = ["run", str(config), "--tracking-uri", "sqlite:///m.db"]
    assert main(args) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main([*args, "--verbose"]) == 2
    err = capsys.readouterr().err
    assert (
        "Traceback (most recent call last)" in err
        and 'raise RuntimeError("the factory broke")' in err
    )
    assert err.strip().splitlines()[-1].startswith("harness: error: model: the factory")


def test_our_warnings_read_as_one_line_and_others_keep_their_form() -> None:
    import warnings

    from experiments.exits import _one_line_warnings
    from tests.paths import ROOT

    ours = str(ROOT / "harness" / "checkpoints" / "policy.py")
    assert (
        _one_line_warnings(UserWarning("a checkpoint could not be written"), UserWarning, ours, 9)
        == "harness: warning: a checkpoint could not be written\n"
    )
    theirs = "/usr/lib/python3/site-packages/keras/src/trainer.py"
    assert _one_line_warnings("old", DeprecationWarning, theirs, 3) == warnings.formatwarning(
        "old", DeprecationWarning, theirs, 3
    )
