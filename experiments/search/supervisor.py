"""The search supervisor: keeps one trial process on each of the launcher's slots, and records
at once how each ended.

Each trial is asked from the study here (Optuna's ask-and-tell), validated as a config (an
invalid combination is pruned with its reason, not run), and handed to the launcher, which
starts its process where it places it (`experiments.search.launch`). When a process dies
(SIGKILL, out of memory, a segfault, its machine lost) its trial is marked FAIL and its
MLflow run FAILED with the exit signal at once, and its parameters are retried
(`search.retries`) from its last checkpoint in a new trial (`experiments.search.recovery`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.config.search_schema import SearchSection
from experiments.search import optuna_internals
from experiments.search.launch import Launcher, Slot, TrialProcess, TrialSpec, trial_config
from experiments.search.outcome import Outcome, classify, exit_text
from experiments.search.recovery import (
    ATTEMPT_ATTR,
    HANDED_BACK_ATTR,
    NAME_ATTR,
    PROCESS_ATTR,
    RESUME_ATTR,
    SUPERVISOR_ATTR,
    enqueue_continuation,
    fail_trial,
    mark_run_failed,
    reap_dead_on_this_host,
    retry,
)
from experiments.search.space import suggest
from experiments.search.study import ERROR_ATTR, RUN_ATTR, ask_lock, counted_trials
from experiments.search.summary import params_text
from experiments.ui.numbers import readable
from tracking.owner import owner


@dataclass(frozen=True)
class TrialBrief:
    """What every trial of this search is told besides its own values.

    Attributes:
        base: the raw config mapping each trial's values are applied to.
        storage_url: the study's Optuna storage; tracking_uri, parent_run_id: where the
            trials' runs go, as children of the study's parent run.
        folder: where each trial's spec and log are written (`searches/<study>/`).
    """

    base: dict[str, Any]
    storage_url: str
    tracking_uri: str
    parent_run_id: str
    folder: Path


@dataclass
class _Running:
    trial: Any
    slot: Slot
    process: TrialProcess
    log: Path
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Runs `study`'s trials over the launcher's slots until the study holds `n_trials` (in
    all, by every supervisor) or `timeout_s` has passed.

    Args:
        study: the Optuna study; search: its `search:` section.
        brief: what each trial is told; runs: the MLflow store (`MlflowRuns`), where a dead
            trial's run is marked FAILED.
        launcher: where trials may run (its slots), and starts each trial's process there
            (`LocalLauncher` on this machine, `RayLauncher` on a Ray cluster).
        journal: the journal file, when the storage is one (the ask lock sits beside it).
        echo: where the line about each trial goes; progress: called with the number of
            trials ended and the status text whenever either changes; after_trial: called
            once the free slots are busy again after a trial ended (refreshes the parent).
    """

    def __init__(
        self,
        study: Any,
        search: SearchSection,
        *,
        brief: TrialBrief,
        runs: Any,
        launcher: Launcher,
        n_trials: int | None,
        timeout_s: float | None = None,
        journal: Path | None = None,
        echo: Callable[[str], None] = print,
        progress: Callable[[int, str], None] | None = None,
        after_trial: Callable[[], None] | None = None,
        poll_s: float = 0.1,
    ) -> None:
        self.study, self.search = study, search
        self.brief, self.runs, self.launcher = brief, runs, launcher
        self.n_trials, self.timeout_s, self.journal = n_trials, timeout_s, journal
        self.echo, self.progress, self.after_trial = echo, progress, after_trial
        self.poll_s = poll_s
        self.counts = {"complete": 0, "pruned": 0, "failed": 0}
        self._running: dict[str, _Running] = {}
        self._stopping = False
        self._beat_at = 0.0
        self._asked_storage_at = 0.0  # when the storage last said the target was reached
        self._error: str | None = None
        self._owner = owner()  # host:pid:start, recorded in its trials

    def run(self) -> str | None:
        """Until the target is reached or the time is up; the bad-input error that stopped
        the search, if one did."""
        began = time.monotonic()
        for number in reap_dead_on_this_host(self.study, self.runs, self.search.retries):
            self.echo(f"trial {number} had ended with its supervisor: failed, and retried")
        self._report()
        refresh = False
        while True:
            for slot in self.launcher.slots():
                if slot.name not in self._running and self._wants_more(began):
                    self._start(slot)
            if refresh and self.after_trial is not None:  # once the free slots are busy again
                self.after_trial()
            refresh = False
            if not self._running and not self._wants_more(began):
                break  # (trials that ended at once, invalid combinations, leave slots free)
            if self._error is not None and not self._stopping:  # the others would fail alike
                self.stop_all()
            time.sleep(self.poll_s)
            self._heartbeat()
            for name, running in list(self._running.items()):
                code = running.process.poll()
                if code is not None:
                    del self._running[name]
                    self._ended(running, code)
                    self._asked_storage_at = 0.0  # a retry of it may be wanted at once
                    refresh = True
                    self._report()
        return self._error

    def status(self) -> str:
        """`running 2 · complete 5 · pruned 1 · failed 0` and the best so far."""
        counts = " · ".join(f"{state} {n}" for state, n in self.counts.items())
        return f"running {len(self._running)} · {counts}{self._best_text()}"

    def stop_all(self) -> None:
        """Stop every running trial: each saves a checkpoint and ends KILLED; it is retried
        from there when the search is continued (unless bad input stopped it)."""
        self._stopping = True
        for running in self._running.values():
            running.process.stop()
        for name, running in list(self._running.items()):
            code = running.process.wait()
            del self._running[name]
            self._ended(running, code)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(sum(self.counts.values()), self.status())

    def _wants_more(self, began: float) -> bool:
        if self._error is not None:
            return False
        if self.timeout_s is not None and time.monotonic() - began > self.timeout_s:
            return False
        if time.monotonic() < self._asked_storage_at + 1.0:  # said no within the last second
            return False
        retries = len(self._retries_waiting())
        if retries == 0 and self._grid_done():
            return False
        wanted = retries > 0 or self.n_trials is None or counted_trials(self.study) < self.n_trials
        # The target is reached while trials still run: ask the storage again in a second or
        # once one of ours ends (another machine's failed trial may queue a retry meanwhile).
        self._asked_storage_at = 0.0 if wanted else time.monotonic()
        return wanted

    def _retries_waiting(self) -> list[Any]:
        import optuna

        return self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))

    def _ask(self) -> Any | None:
        """A trial of the study (a waiting retry first), unless another supervisor took the
        last one; asked under the lock every supervisor of the study shares."""
        with ask_lock(self.study, self.journal):
            wanted = self.n_trials is None or counted_trials(self.study) < self.n_trials
            if not (wanted or self._retries_waiting()):
                return None
            trial = self.study.ask()
            if optuna_internals.has_heartbeats(self.study):
                # A trial without any beat is never stale to Optuna: beat as soon as it is
                # asked, so one whose machine vanishes before the next beat is reaped too.
                optuna_internals.record_heartbeat(self.study, optuna_internals.trial_id(trial))
            trial.set_user_attr(SUPERVISOR_ATTR, self._owner)
        return trial

    def _start(self, slot: Slot) -> None:
        import optuna
        from pydantic import ValidationError

        from experiments.config.schema import ExperimentConfig

        trial = self._ask()
        if trial is None:
            return
        try:
            values = suggest(trial, self.search.space)
        except ValueError as error:
            self._tell(trial, state=optuna.trial.TrialState.FAIL)
            self._error = str(error)
            return
        # A retry continues the run of the trial it retries, under that run's name.
        run_name = trial.user_attrs.get(NAME_ATTR) or f"{self.study.study_name}-{trial.number}"
        trial.set_user_attr(NAME_ATTR, run_name)
        raw = trial_config(self.brief.base, values, slot=slot, run_name=run_name)
        try:
            config = ExperimentConfig.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            reason = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
            trial.set_user_attr(ERROR_ATTR, f"invalid config: {reason}")
            self._tell(trial, state=optuna.trial.TrialState.PRUNED)
            self.counts["pruned"] += 1
            self.echo(
                f"trial {trial.number} pruned: invalid config ({reason}) {params_text(values)}"
            )
            return
        log = self.brief.folder / f"trial-{trial.number:04d}.log"
        spec = TrialSpec(
            storage=self.brief.storage_url,
            study=self.study.study_name,
            trial_id=optuna_internals.trial_id(trial),
            config=config.model_dump(mode="json", by_alias=True),
            tracking_uri=self.brief.tracking_uri,
            parent_run_id=self.brief.parent_run_id,
            log=str(log.resolve()),
            metrics=self.search.metrics,
            directions=self.search.directions,
            params=values,
            resume_run=trial.user_attrs.get(RESUME_ATTR),
        )
        spec_file = spec.write(self.brief.folder / f"trial-{trial.number:04d}.json")
        process = self.launcher.launch(spec_file, slot=slot, log=log)
        trial.set_user_attr(PROCESS_ATTR, process.owner)
        self._running[slot.name] = _Running(trial, slot, process, log)
        self.echo(f"trial {trial.number} started on {slot.name}: {params_text(values)}")
        self._report()

    def _ended(self, running: _Running, code: int) -> None:
        number, where = running.trial.number, running.slot.name
        frozen = optuna_internals.frozen_trial(self.study, optuna_internals.trial_id(running.trial))
        outcome = classify(frozen.state.name, code)
        self.counts[outcome.counted_as] += 1
        took = time.monotonic() - running.started
        if outcome is Outcome.COMPLETE:
            values = ", ".join(
                f"{metric} {readable(float(value))}"
                for metric, value in zip(self.search.metrics, frozen.values or [], strict=False)
            )
            self.echo(
                f"trial {number} complete on {where} in {took:.0f} s: {values}{self._best_text()}"
            )
            return
        if outcome is Outcome.PRUNED:
            reported = frozen.intermediate_values
            at = ""
            if reported:
                epoch = max(reported)
                at = f" at epoch {epoch} ({self.search.metrics[0]} {readable(reported[epoch])})"
            self.echo(f"trial {number} pruned on {where} after {took:.0f} s{at}")
            return
        if outcome is Outcome.BAD_INPUT:  # the search stops with its line
            self._error = frozen.user_attrs.get(ERROR_ATTR) or _last_line(running.log)
            return
        why = exit_text(code)
        run_id = frozen.user_attrs.get(RUN_ATTR)
        if run_id is not None:  # first: whoever sees the trial FAIL finds its run FAILED too
            mark_run_failed(self.runs, run_id, why)
        handed_back = frozen.user_attrs.get(HANDED_BACK_ATTR) or (
            outcome is Outcome.DIED and not fail_trial(self.study, number)  # died untold
        )
        if handed_back:  # its parent (a Ray task's worker) died: it queued its continuation
            self.echo(f"trial {number} stopped on {where} ({why}): continued by its own retry")
            return
        if self._error is not None:
            self.echo(f"trial {number} stopped on {where}")
        elif self._stopping:  # Ctrl-C: continued from its checkpoint by the next search
            attempt = int(frozen.user_attrs.get(ATTEMPT_ATTR, 0))
            enqueue_continuation(self.study, frozen, attempt=attempt)
            self.echo(f"trial {number} stopped on {where}: continued next time")
        elif retry(self.study, frozen, self.search.retries):
            self.echo(f"trial {number} failed on {where} ({why}): retrying it")
        else:
            self.echo(f"trial {number} failed on {where} ({why}); log: {running.log}")

    def _heartbeat(self) -> None:
        """With a heartbeat storage (PostgreSQL): beat for this supervisor's running trials,
        and fail (then retry) any supervisor's trials whose beats stopped — a machine that
        vanished. Optuna beats only inside `study.optimize`, so ask-and-tell beats here."""
        import optuna

        if not optuna_internals.has_heartbeats(self.study):
            return  # the journal file: one machine, where the supervisor sees every exit
        if time.monotonic() - self._beat_at < self.search.heartbeat_s:
            return
        self._beat_at = time.monotonic()
        optuna_internals.configure_heartbeats(
            self.study,
            interval_s=self.search.heartbeat_s,
            grace_period_s=self.search.grace_period_s,
            on_stale=self._reaped,
        )
        for running in self._running.values():
            trial_id = optuna_internals.trial_id(running.trial)
            optuna_internals.record_heartbeat(self.study, trial_id)
        optuna.storages.fail_stale_trials(self.study)

    def _reaped(self, study: Any, frozen: Any) -> None:
        why = "its machine stopped sending heartbeats"
        run_id = frozen.user_attrs.get(RUN_ATTR)
        if run_id is not None:
            mark_run_failed(self.runs, run_id, why)
        retried = retry(self.study, frozen, self.search.retries)
        self.echo(f"trial {frozen.number} failed ({why}){': retrying it' if retried else ''}")

    def _tell(self, trial: Any, **kwargs: Any) -> None:
        try:
            self.study.tell(trial, **kwargs)
        except RuntimeError:  # GridSampler stops the study once the grid is done: noted below
            pass

    def _grid_done(self) -> bool:
        import optuna

        sampler = self.study.sampler
        return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(self.study)

    def _best_text(self) -> str:
        if len(self.search.metrics) > 1:
            return ""
        try:
            best = self.study.best_trial
        except ValueError:
            return ""
        return f"; best so far: trial {best.number}, {self.search.metrics[0]}={best.value:.4g}"


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else f"the trial failed; see {log}"
