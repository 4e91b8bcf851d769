"""How a trial ended, from what its process and the study say: one pure decision.

The trial process tells Optuna how it ended (COMPLETE, PRUNED, FAIL) before it exits; its
exit status says the rest: 2 is bad input (the search stops with its line), anything else
with a trial still RUNNING is a process that died without telling (SIGKILL, out of memory).
"""

from __future__ import annotations

import enum
import signal

from experiments.search.launch.base import NODE_LOST, WORKER_LOST


class Outcome(enum.Enum):
    """What the supervisor does with an ended trial."""

    COMPLETE = "complete"  # its value is in the study
    PRUNED = "pruned"  # stopped early by the pruner, or an invalid combination
    BAD_INPUT = "bad input"  # the search stops: the other trials would fail alike
    FAILED = "failed"  # told Optuna FAIL itself: its run is FAILED or KILLED
    DIED = "died"  # never told Optuna: the supervisor fails its trial and run

    @property
    def counted_as(self) -> str:
        """The column of the trial counts (`complete`, `pruned`, `failed`)."""
        return self.value if self in (Outcome.COMPLETE, Outcome.PRUNED) else "failed"


def classify(state: str, exit_code: int) -> Outcome:
    """The outcome of a trial whose process exited with `exit_code`, its state in the study
    being `state` (an Optuna `TrialState` name: COMPLETE, PRUNED, FAIL, RUNNING, ...)."""
    if state == "COMPLETE":
        return Outcome.COMPLETE
    if state == "PRUNED":
        return Outcome.PRUNED
    if exit_code == 2:
        return Outcome.BAD_INPUT
    if state == "RUNNING":
        return Outcome.DIED
    return Outcome.FAILED


def exit_text(code: int) -> str:
    """`killed by SIGKILL`, `exit status 1`, `node lost`: how a process ended, in words."""
    if code == NODE_LOST:  # the launcher's word: the machine went, with the process
        return "node lost"
    if code == WORKER_LOST:
        return "its Ray worker died"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
