"""ProgressLogger: plain periodic lines off a terminal, a live bar on one, in both engines."""

from __future__ import annotations

import io

import pytest

from harness import train
from harness.callbacks import ProgressLogger
from tests.harness.problems import make_data, make_model


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_plain_lines_when_output_is_not_a_terminal(engine: str) -> None:
    stream = io.StringIO()
    progress = ProgressLogger("auto", interval_s=0.0, stream=stream)
    assert progress.mode == "lines"
    train(make_model(), make_data(), engine=engine, epochs=2, callbacks=[progress])
    lines = stream.getvalue().splitlines()
    done = [line for line in lines if " - done - " in line]
    assert [line.split()[1] for line in done] == ["1/2", "2/2"]
    assert "val_loss" in done[-1] and "accuracy" in done[-1]
    assert any("10/10 steps" in line for line in lines)  # periodic step lines
    assert "\x1b[" not in stream.getvalue()  # no terminal control codes in logs


def test_a_bar_with_eta_and_metrics_in_a_terminal() -> None:
    stream = _Terminal()
    progress = ProgressLogger("auto", stream=stream)
    assert progress.mode == "bar"
    train(make_model(), make_data(), engine="custom", epochs=1, callbacks=[progress])
    output = stream.getvalue()
    assert "epoch 1/1" in output and "ETA" in output and "10/10" in output
    assert output.endswith("\x1b[?25h")  # stopped at train end: the cursor is back


@pytest.mark.parametrize("columns", [80, 120])
def test_each_epoch_leaves_a_line_that_fits_the_terminal(
    columns: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    monkeypatch.setenv("COLUMNS", str(columns))
    stream = _Terminal()
    progress = ProgressLogger("bar", stream=stream)
    train(make_model(), make_data(), engine="fit", epochs=2, callbacks=[progress])
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())  # no control codes
    lines = [part for line in plain.split("\n") for part in line.split("\r")]
    epochs = [line for line in lines if re.match(r"epoch \d/2  \d+\.\ds  ", line)]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], plain
    for line in epochs:  # the epoch and its time first, val_loss next, nothing cut
        assert len(line) <= columns, line
        assert line.split()[3] == "val_loss", line
        values = line.split()[3:]
        assert len(values) % 2 == 0 and all(float(v) == float(v) for v in values[1::2])
    assert all(len(line) <= columns for line in lines), plain  # the bar's frames too


def test_the_bar_is_stopped_when_training_fails() -> None:
    import keras

    stream = _Terminal()
    progress = ProgressLogger("bar", stream=stream)

    def fail(epoch: int, logs: dict) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        train(
            make_model(),
            make_data(),
            engine="fit",
            epochs=2,
            callbacks=[progress, keras.callbacks.LambdaCallback(on_epoch_end=fail)],
        )
    assert stream.getvalue().endswith("\x1b[?25h")  # stopped: the cursor is back


def test_rejects_an_unknown_mode() -> None:
    with pytest.raises(
        ValueError, match="`mode` must be one of auto, bar, lines, none. Received: mode='fancy'"
    ):
        ProgressLogger("fancy")


def test_step_count_never_passes_the_epoch_length_with_steps_per_execution() -> None:
    stream = io.StringIO()
    progress = ProgressLogger("lines", interval_s=0.0, stream=stream)
    # 10 batches per epoch in executions of 3: the last one is reported as batch index 11.
    train(
        make_model(steps_per_execution=3),
        make_data(),
        engine="custom",
        epochs=1,
        callbacks=[progress],
    )
    counts = [line.split(" - ")[1] for line in stream.getvalue().splitlines() if "steps" in line]
    assert counts == ["3/10 steps", "6/10 steps", "9/10 steps", "10/10 steps"]


def test_fitted_values_put_the_important_first_and_the_pace_last() -> None:
    from harness.callbacks.progress import fit_logs

    logs = {
        "loss": 0.21234,
        "accuracy": 0.93612,
        "val_loss": 0.19876,
        "val_accuracy": 0.94,
        "learning_rate": 0.001,
        "epoch": 3,
        "steps_per_sec": 412.3,
    }
    assert fit_logs(logs, 200) == (
        "val_loss 0.1988  val_acc 0.94  loss 0.2123  acc 0.9361  steps_per_sec 412.3  lr 0.001"
    )
    assert fit_logs(logs, 42) == "val_loss 0.1988  val_acc 0.94  loss 0.2123"
    assert fit_logs(logs, 41) == "val_loss 0.1988  val_acc 0.94"
    assert fit_logs(logs, 10) == ""  # not even one value: none, rather than half of one
