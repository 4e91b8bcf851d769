"""How an ended trial is classified, from its state in the study and its exit status."""

from __future__ import annotations

import pytest

from experiments.search.outcome import Outcome, classify, exit_text


@pytest.mark.parametrize(
    ("state", "code", "outcome", "counted_as"),
    [
        ("COMPLETE", 0, Outcome.COMPLETE, "complete"),
        ("COMPLETE", 1, Outcome.COMPLETE, "complete"),  # told first, then failed to close
        ("PRUNED", 0, Outcome.PRUNED, "pruned"),
        ("PRUNED", 130, Outcome.PRUNED, "pruned"),
        ("FAIL", 2, Outcome.BAD_INPUT, "failed"),  # the trial found bad input and said so
        ("RUNNING", 2, Outcome.BAD_INPUT, "failed"),
        ("FAIL", 1, Outcome.FAILED, "failed"),  # diverged: told FAIL itself
        ("FAIL", 130, Outcome.FAILED, "failed"),  # stopped by Ctrl-C, checkpointed
        ("RUNNING", -9, Outcome.DIED, "failed"),  # SIGKILL: nobody told Optuna
        ("RUNNING", 0, Outcome.DIED, "failed"),  # exited without telling
        ("RUNNING", 137, Outcome.DIED, "failed"),
    ],
)
def test_classify(state: str, code: int, outcome: Outcome, counted_as: str) -> None:
    assert classify(state, code) is outcome
    assert outcome.counted_as == counted_as


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (-9, "killed by SIGKILL"),
        (-15, "killed by SIGTERM"),
        (1, "exit status 1"),
        (-99, "killed by signal 99"),
    ],
)
def test_exit_text(code: int, text: str) -> None:
    assert exit_text(code) == text
