"""The supervisor's slot loop with a fake launcher: trials "run" by telling a real in-memory
Optuna study how they ended, in milliseconds, without TensorFlow or a process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest

from experiments.config.search_schema import SearchSection
from experiments.search import optuna_internals
from experiments.search.launch import NODE_LOST, WORKER_LOST, Slot, TrialSpec
from experiments.search.recovery import hand_back
from experiments.search.study import ERROR_ATTR, RETRY_ATTR
from experiments.search.supervisor import Supervisor, TrialBrief

BASE = {
    "model": {"name": "mlp"},
    "data": {"name": "digits"},
    "loss": "sparse_categorical_crossentropy",
}
SPACE = {
    "optimizer.learning_rate": {"float": [0.001, 0.1], "log": True},
    "data.batch_size": {"categorical": [16, 32]},
}
BAD_INPUT = "search.metric 'val_acc' is not logged by the run"


@dataclass
class FakeProcess:
    """Ends as `how` says (`complete:0.5`, `pruned`, `failed`, `died`, `bad input`; `@N`:
    after N polls, 2 by default), telling the study first, as a trial process does;
    `interrupt` is a Ctrl-C while it trains."""

    launcher: FakeLauncher
    spec: TrialSpec
    how: str
    owner: str = "fake-host:1:1.00"
    stopped: bool = False
    code: int | None = None

    def __post_init__(self) -> None:
        self.how, _, polls = self.how.partition("@")
        self.polls = int(polls or 2)

    def poll(self) -> int | None:
        if self.code is None and self.stopped:
            self._end("killed")
        elif self.code is None and self.how == "interrupt":
            raise KeyboardInterrupt
        elif self.code is None:
            self.polls -= 1
            if self.polls == 0:
                self._end(self.how)
        return self.code

    def stop(self) -> None:
        self.stopped = True

    def wait(self) -> int:
        while self.poll() is None:
            pass
        assert self.code is not None
        return self.code

    def _end(self, how: str) -> None:
        study = self.launcher.study
        trial = optuna_internals.trial_for(study, self.spec.trial_id)
        if how.startswith("complete"):
            study.tell(trial.number, float(how.split(":")[1]))
            self.code = 0
        elif how == "pruned":
            study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
            self.code = 0
        elif how == "bad input":
            trial.set_user_attr(ERROR_ATTR, BAD_INPUT)
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            self.code = 2
        elif how in ("failed", "killed"):  # told FAIL itself: a diverged run, a Ctrl-C
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            self.code = 1 if how == "failed" else 130
        elif how == "node lost":  # its machine went with it: nobody told Optuna
            self.code = NODE_LOST
        elif how == "handed back":  # its parent died first: it queued its own continuation
            hand_back(study, self.spec.trial_id, runs=None)
            self.code = WORKER_LOST
        else:
            assert how == "died"  # SIGKILL: nobody told Optuna
            self.code = -9
        self.launcher.alive -= 1


@dataclass
class FakeLauncher:
    """Hands out the next ending of `endings` for each trial it launches."""

    study: Any
    endings: list[str]
    launched: list[tuple[TrialSpec, Slot]] = field(default_factory=list)
    alive: int = 0
    most_alive: int = 0
    where: list[Slot] = field(default_factory=list)

    def slots(self) -> list[Slot]:
        return self.where

    def launch(self, spec_file: Path, *, slot: Slot, log: Path) -> FakeProcess:
        spec = TrialSpec.read(spec_file)
        self.launched.append((spec, slot))
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        return FakeProcess(self, spec, self.endings.pop(0))


def _supervisor(
    tmp_path: Path,
    endings: list[str],
    *,
    slots: int = 2,
    n_trials: int | None = None,
    **search: Any,
) -> tuple[Supervisor, FakeLauncher, list[str], list[tuple[int, str]]]:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    section = SearchSection.model_validate(
        {"metric": "val_accuracy", "direction": "maximize", "space": SPACE, **search}
    )
    launcher = FakeLauncher(
        study, list(endings), where=[Slot(f"gpu{i}", (str(i),)) for i in range(slots)]
    )
    lines: list[str] = []
    progress: list[tuple[int, str]] = []
    supervisor = Supervisor(
        study,
        section,
        brief=TrialBrief(BASE, "journal:///nowhere", "sqlite:///nowhere.db", "parent", tmp_path),
        runs=None,  # no trial records a run here: nothing to mark FAILED in MLflow
        launcher=launcher,
        n_trials=len(endings) if n_trials is None else n_trials,
        echo=lines.append,
        progress=lambda done, text: progress.append((done, text)),
        poll_s=0.0,
    )
    return supervisor, launcher, lines, progress


def test_trials_end_as_their_processes_say_and_failed_ones_are_retried(tmp_path: Path) -> None:
    endings = ["complete:0.5", "died", "pruned", "complete:0.75", "failed", "failed"]
    supervisor, _, lines, progress = _supervisor(tmp_path, endings, slots=1, n_trials=4, retries=1)

    assert supervisor.run() is None

    trials = supervisor.study.get_trials()
    assert [t.state.name for t in trials] == [
        "COMPLETE", "FAIL", "PRUNED", "COMPLETE", "FAIL", "FAIL",
    ]  # fmt: skip
    assert supervisor.counts == {"complete": 2, "pruned": 1, "failed": 3}
    assert {
        t.number: t.user_attrs.get(RETRY_ATTR) for t in trials if RETRY_ATTR in t.user_attrs
    } == {
        2: 1,
        5: 4,
    }  # each failed trial once (search.retries: 1), with its parameters
    assert trials[2].params == trials[1].params and trials[5].params == trials[4].params
    assert "trial 1 failed on gpu0 (killed by SIGKILL): retrying it" in lines
    assert "trial 4 failed on gpu0 (exit status 1): retrying it" in lines
    assert any(line.startswith("trial 5 failed on gpu0 (exit status 1); log: ") for line in lines)
    assert progress[-1] == (
        6,
        "running 0 · complete 2 · pruned 1 · failed 3; best so far: trial 3, val_accuracy=0.75",
    )


def test_each_slot_runs_one_trial_at_a_time(tmp_path: Path) -> None:
    supervisor, launcher, _, _ = _supervisor(
        tmp_path, [f"complete:0.{i}@{i + 2}" for i in range(6)]
    )
    supervisor.run()
    assert len(launcher.launched) == 6
    assert launcher.most_alive == 2
    assert {slot.name for _, slot in launcher.launched} == {"gpu0", "gpu1"}


def test_each_trial_is_briefed_with_its_values_slot_and_run_name(tmp_path: Path) -> None:
    supervisor, launcher, _, _ = _supervisor(tmp_path, ["complete:0.5", "complete:0.6"])
    supervisor.run()
    for number, (spec, slot) in enumerate(launcher.launched):
        assert spec.params == supervisor.study.trials[number].params
        assert spec.config["optimizer"]["learning_rate"] == spec.params["optimizer.learning_rate"]
        assert spec.config["data"]["batch_size"] == spec.params["data.batch_size"]
        assert spec.config["tracking"]["run_name"] == f"{supervisor.study.study_name}-{number}"
        assert spec.config["tracking"]["system_metrics_scope"] == "own"
        assert (spec.parent_run_id, spec.metrics, spec.directions) == (
            "parent",
            ["val_accuracy"],
            ["maximize"],
        )
        assert slot.name == f"gpu{number}"  # both slots were free
        assert spec.log == str((tmp_path / f"trial-{number:04d}.log").resolve())


def test_bad_input_in_a_trial_stops_the_others_and_the_search(tmp_path: Path) -> None:
    endings = ["bad input", "complete:0.5@50", "complete:0.5", "complete:0.5"]
    supervisor, launcher, lines, _ = _supervisor(tmp_path, endings)

    assert supervisor.run() == BAD_INPUT

    assert len(launcher.launched) == 2  # no trial started after it
    assert [t.state.name for t in supervisor.study.get_trials()] == ["FAIL", "FAIL"]
    assert "trial 1 stopped on gpu1" in lines
    assert supervisor.counts["failed"] == 2


@pytest.mark.parametrize(
    ("invalid", "reason"),
    [
        ({"trainer.epochs": {"categorical": [0]}}, "trainer.epochs: "),  # must be >= 1
        (
            {
                "trainer.steps_per_epoch": {"categorical": [5]},
                "trainer.steps_per_execution": {"categorical": [2]},
            },
            "trainer: Value error, trainer.steps_per_epoch (5) must be a multiple",
        ),
    ],
    ids=["out-of-range", "steps-per-epoch-vs-execution"],
)
def test_an_invalid_combination_is_pruned_with_its_reason_and_never_launched(
    tmp_path: Path, invalid: dict[str, Any], reason: str
) -> None:
    space = {**SPACE, **invalid}
    supervisor, launcher, lines, _ = _supervisor(tmp_path, ["-", "-"], slots=1, space=space)
    assert supervisor.run() is None
    trials = supervisor.study.get_trials()
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"]
    assert all(t.user_attrs[ERROR_ATTR].startswith(f"invalid config: {reason}") for t in trials)
    assert launcher.launched == []
    assert lines[0].startswith(f"trial 0 pruned: invalid config ({reason}")


def test_a_group_of_gpus_runs_its_trial_mirrored(tmp_path: Path) -> None:
    supervisor, launcher, _, _ = _supervisor(tmp_path, ["complete:0.5"], slots=1)
    launcher.where = [Slot("gpu0+1", ("0", "1"))]
    supervisor.run()
    ((spec, slot),) = launcher.launched
    assert spec.config["trainer"]["distribute"] == "mirrored"
    assert slot.visible == "0,1"
    assert spec.config["checkpoint"]["mirror_to_mlflow"] is False  # this machine's disk


def test_a_cluster_slot_mirrors_over_its_placed_gpus_and_mirrors_checkpoints(
    tmp_path: Path,
) -> None:
    supervisor, launcher, _, _ = _supervisor(tmp_path, ["complete:0.5"], slots=1)
    launcher.where = [Slot("ray0", placed_gpus=2, mirror_checkpoints=True)]
    supervisor.run()
    ((spec, _),) = launcher.launched
    assert spec.config["trainer"]["distribute"] == "mirrored"
    assert spec.config["checkpoint"]["mirror_to_mlflow"] is True  # a retry elsewhere finds it


def test_a_lost_node_fails_its_trial_and_retries_it_once_even_if_it_handed_itself_back(
    tmp_path: Path,
) -> None:
    endings = ["node lost", "complete:0.5", "handed back", "complete:0.6"]
    supervisor, _, lines, _ = _supervisor(tmp_path, endings, slots=1, n_trials=2, retries=1)
    assert supervisor.run() is None
    trials = supervisor.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "FAIL", "COMPLETE"]
    assert [t.user_attrs.get(RETRY_ATTR) for t in trials] == [None, 0, None, 2]
    assert "trial 0 failed on gpu0 (node lost): retrying it" in lines
    assert any(line.startswith("trial 2 stopped on gpu0 (its Ray worker died)") for line in lines)


def test_ctrl_c_stops_each_running_trial_and_queues_its_continuation(tmp_path: Path) -> None:
    supervisor, _, lines, _ = _supervisor(tmp_path, ["complete:0.5@1000", "interrupt"])
    with pytest.raises(KeyboardInterrupt):
        supervisor.run()
    supervisor.stop_all()  # what `harness search` does on Ctrl-C
    trials = supervisor.study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "WAITING", "WAITING"]
    assert sorted(t.user_attrs[RETRY_ATTR] for t in trials[2:]) == [0, 1]
    assert sum("continued next time" in line for line in lines) == 2
    assert supervisor.status().startswith("running 0 · complete 0 · pruned 0 · failed 2")
