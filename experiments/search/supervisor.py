"""The search supervisor: owns the device slots, runs one trial process per slot, and records
at once how each process ended.

Each trial is asked from the study here (Optuna's ask-and-tell), validated as a config (an
invalid combination is pruned with its reason, not run), and trained by
`python -m experiments.search.trial` in a fresh process with `CUDA_VISIBLE_DEVICES` set to its
slot's devices before TensorFlow is imported. When a process dies (SIGKILL, out of memory, a
segfault) its trial is marked FAIL and its MLflow run FAILED with the exit signal at once, and
its parameters are retried (`search.retries`) from its last checkpoint in a new trial.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.config.search_schema import SearchSection
from experiments.errors import UsageError
from experiments.search.recovery import (
    ATTEMPT_ATTR,
    NAME_ATTR,
    PROCESS_ATTR,
    RESUME_ATTR,
    SUPERVISOR_ATTR,
    enqueue_continuation,
    fail_trial,
    mark_run_failed,
    owner,
    reap_dead_on_this_host,
    retry,
)
from experiments.search.space import apply, suggest
from experiments.search.study import (
    ERROR_ATTR,
    RUN_ATTR,
    ask_lock,
    behind_cache,
    counted_trials,
)


@dataclass(frozen=True)
class Slot:
    """Where one trial runs: GPU ids (`CUDA_VISIBLE_DEVICES`), or none for a CPU slot; a CPU
    slot may own a share of the host's cores (its process is pinned to them)."""

    name: str
    gpus: tuple[str, ...] = ()
    cores: tuple[int, ...] = ()

    @property
    def visible(self) -> str:
        return ",".join(self.gpus)  # "" hides every GPU: a CPU slot


def parse_devices(text: str | None) -> list[Slot]:
    """`0,1,2,3` (a GPU each), `0,1:2,3` (two GPUs each), `cpu:2` (two CPU slots); default:
    every visible GPU, else one CPU slot."""
    if text is None:
        return [Slot(f"gpu{g}", (g,)) for g in _visible_gpus()] or [Slot("cpu0")]
    text = text.strip()
    if text.startswith("cpu"):
        count = text.removeprefix("cpu").removeprefix(":") or "1"
        if not count.isdigit() or int(count) < 1:
            raise UsageError(
                f"--devices '{text}': CPU slots are written cpu:N with N ≥ 1, e.g. --devices cpu:2"
            )
        return _cpu_slots(int(count))
    groups = [tuple(g.strip() for g in group.split(",")) for group in text.split(":")]
    ids = [gpu for group in groups for gpu in group]
    if not ids or any(not gpu.isdigit() for gpu in ids):
        raise UsageError(
            f"--devices '{text}': GPU ids are integers, comma-separated, one group per trial "
            "separated by ':', e.g. --devices 0,1,2,3 or --devices 0,1:2,3 or --devices cpu:2"
        )
    if len(set(ids)) != len(ids):
        raise UsageError(f"--devices '{text}': a GPU appears twice; each GPU belongs to one slot")
    if ":" not in text:  # one GPU per trial
        return [Slot(f"gpu{gpu}", (gpu,)) for gpu in ids]
    return [Slot("gpu" + "+".join(group), group) for group in groups]


def _cpu_slots(count: int) -> list[Slot]:
    """`count` CPU slots, each pinned to its own share of this process's cores when there are
    enough (TensorFlow sizes its thread pools to the cores it may use, so two trials do not
    fight over the same ones); more slots than cores share them all."""
    cores = sorted(os.sched_getaffinity(0))
    if count == 1 or count > len(cores):
        return [Slot(f"cpu{i}") for i in range(count)]
    return [Slot(f"cpu{i}", cores=tuple(cores[i::count])) for i in range(count)]


def _visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g for g in listed.split(",") if g.strip()]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()]


@dataclass
class Running:
    trial: Any
    slot: Slot
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)


@dataclass
class Supervisor:
    """Runs `study`'s trials of `base` (the raw config mapping) over `slots`."""

    study: Any
    storage_url: str
    base: dict[str, Any]
    search: SearchSection
    slots: list[Slot]
    tracking_uri: str
    parent_run_id: str
    folder: Path
    n_trials: int | None  # the study's target: trials in all, by every supervisor
    timeout_s: float | None
    journal: Path | None = None  # the journal file, when the storage is one (for the lock)
    echo: Any = print
    after_trial: Any = None  # called after each trial ends (refreshes the parent run)
    progress: Any = None  # called with (trials ended, status text) when either changes
    counts: dict[str, int] = field(
        default_factory=lambda: {"complete": 0, "pruned": 0, "failed": 0}
    )
    _running: dict[str, Running] = field(default_factory=dict)
    _stopping: bool = False
    _beat_at: float = 0.0
    _asked_storage_at: float = 0.0  # when the storage last said the target was reached
    _error: str | None = None
    _owner: str = field(default_factory=owner)  # host:pid:start, recorded in its trials

    def run(self) -> str | None:
        """Until `n_trials` have ended or the time is up; the bad-input error that stopped the
        search, if one did."""
        began = time.monotonic()
        for number in reap_dead_on_this_host(self.study, self.tracking_uri, self.search.retries):
            self.echo(f"trial {number} had ended with its supervisor: failed, and retried")
        refresh = False
        while True:
            for slot in self.slots:
                if slot.name not in self._running and self._wants_more(began):
                    self._start(slot)
            if refresh and self.after_trial is not None:  # once the free slots are busy again
                self.after_trial()
            refresh = False
            if not self._running:
                break
            if self._error is not None and not self._stopping:  # the others would fail alike
                self.stop_all()
            time.sleep(0.1)
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

    def _start(self, slot: Slot) -> None:
        import optuna
        from pydantic import ValidationError

        from experiments.config.schema import ExperimentConfig

        with ask_lock(self.study._storage, self.study.study_name, self.journal):
            wanted = self.n_trials is None or counted_trials(self.study) < self.n_trials
            if not (wanted or self._retries_waiting()):
                return  # another supervisor took the last trial
            trial = self.study.ask()  # a waiting retry first
            self._first_beat(trial)
            trial.set_user_attr(SUPERVISOR_ATTR, self._owner)
        try:
            values = suggest(trial, self.search.space)
        except ValueError as error:
            self._tell(trial, state=optuna.trial.TrialState.FAIL)
            self._error = str(error)
            return
        raw = apply(self.base, values)
        if len(slot.gpus) > 1:  # a group of GPUs: the run mirrors over them
            raw.setdefault("trainer", {})["distribute"] = "mirrored"
        # A retry continues the run of the trial it retries, under that run's name.
        run_name = trial.user_attrs.get(NAME_ATTR) or f"{self.study.study_name}-{trial.number}"
        trial.set_user_attr(NAME_ATTR, run_name)
        tracking = raw.setdefault("tracking", {})
        tracking["run_name"] = run_name
        tracking["system_metrics_scope"] = "own"  # this trial's processes and GPUs, not the host's
        try:
            config = ExperimentConfig.model_validate(raw)
        except ValidationError as error:
            first = error.errors()[0]
            reason = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
            trial.set_user_attr(ERROR_ATTR, f"invalid config: {reason}")
            self._tell(trial, state=optuna.trial.TrialState.PRUNED)
            self.counts["pruned"] += 1
            self.echo(f"trial {trial.number} pruned: invalid config ({reason}) {values}")
            return
        log = self.folder / f"trial-{trial.number:04d}.log"
        spec = {
            "storage": self.storage_url,
            "study": self.study.study_name,
            "trial_id": trial._trial_id,
            "config": config.model_dump(mode="json", by_alias=True),
            "tracking_uri": self.tracking_uri,
            "parent_run_id": self.parent_run_id,
            "log": str(log.resolve()),
            "resume_run": trial.user_attrs.get(RESUME_ATTR),
            "search": {"metrics": self.search.metrics, "directions": self.search.directions},
            "params": values,
        }
        spec_file = self.folder / f"trial-{trial.number:04d}.json"
        spec_file.write_text(json.dumps(spec))
        env = {
            **os.environ,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # CUDA's ids are nvidia-smi's (and NVML's)
            "CUDA_VISIBLE_DEVICES": slot.visible,
            "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # no memory held beyond what the trial uses
            "PYTHONUNBUFFERED": "1",
        }
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "experiments.search.trial", str(spec_file)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                # Its own session: a Ctrl-C on the search's terminal reaches the supervisor
                # only, which stops each trial once (a second signal would stop it at once,
                # mid-step).
                start_new_session=True,
            )
        if slot.cores:  # before the trial imports TensorFlow and starts its threads
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(process.pid, slot.cores)
        trial.set_user_attr(PROCESS_ATTR, owner(process.pid))
        self._running[slot.name] = Running(trial, slot, process, log)
        self.echo(f"trial {trial.number} started on {slot.name}: {values}")
        self._report()

    def _ended(self, running: Running, code: int) -> None:
        import optuna

        number = running.trial.number
        frozen = self.study._storage.get_trial(running.trial._trial_id)
        state = frozen.state
        took = time.monotonic() - running.started
        if state == optuna.trial.TrialState.COMPLETE:
            self.counts["complete"] += 1
            self.echo(
                f"trial {number} complete on {running.slot.name} in {took:.0f} s: "
                f"{frozen.values}{self._best_text()}"
            )
            return
        if state == optuna.trial.TrialState.PRUNED:
            self.counts["pruned"] += 1
            self.echo(f"trial {number} pruned on {running.slot.name} after {took:.0f} s")
            return
        if code == 2:  # bad input in the trial: the search stops with its line
            self._error = frozen.user_attrs.get(ERROR_ATTR) or _last_line(running.log)
            self.counts["failed"] += 1
            return
        why = _exit_text(code)
        run_id = frozen.user_attrs.get(RUN_ATTR)
        if run_id is not None:  # first: whoever sees the trial FAIL finds its run FAILED too
            mark_run_failed(self.tracking_uri, run_id, why)
        if state == optuna.trial.TrialState.RUNNING:  # the process died without telling
            fail_trial(self.study, number)
        self.counts["failed"] += 1
        if self._error is not None:
            self.echo(f"trial {number} stopped on {running.slot.name}")
        elif self._stopping:  # Ctrl-C: continued from its checkpoint by the next search
            attempt = int(frozen.user_attrs.get(ATTEMPT_ATTR, 0))
            enqueue_continuation(self.study, frozen, attempt=attempt)
            self.echo(f"trial {number} stopped on {running.slot.name}: continued next time")
        elif retry(self.study, frozen, self.search.retries):
            self.echo(f"trial {number} failed on {running.slot.name} ({why}): retrying it")
        else:
            self.echo(f"trial {number} failed on {running.slot.name} ({why}); log: {running.log}")

    def _heartbeat(self) -> None:
        """With a heartbeat storage (PostgreSQL): beat for this supervisor's running trials,
        and fail (then retry) any supervisor's trials whose beats stopped — a machine that
        vanished. Optuna beats only inside `study.optimize`, so ask-and-tell beats here."""
        import optuna

        storage = self.study._storage
        backend = behind_cache(storage)
        if getattr(backend, "heartbeat_interval", None) is None:
            return  # the journal file: one machine, where the supervisor sees every exit
        if time.monotonic() - self._beat_at < self.search.heartbeat_s:
            return
        self._beat_at = time.monotonic()
        backend.heartbeat_interval = self.search.heartbeat_s
        backend.grace_period = self.search.grace_period_s
        backend.heartbeat_stale_trial_callback = self._reaped
        for running in self._running.values():
            storage.record_heartbeat(running.trial._trial_id)
        optuna.storages.fail_stale_trials(self.study)

    def _first_beat(self, trial: Any) -> None:
        """A trial without any beat is never stale to Optuna: beat as soon as it is asked, so
        one whose machine vanishes before the next beat is reaped too."""
        storage = self.study._storage
        if getattr(behind_cache(storage), "heartbeat_interval", None) is not None:
            storage.record_heartbeat(trial._trial_id)

    def _reaped(self, study: Any, frozen: Any) -> None:
        why = "its machine stopped sending heartbeats"
        run_id = frozen.user_attrs.get(RUN_ATTR)
        if run_id is not None:
            mark_run_failed(self.tracking_uri, run_id, why)
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

    def stop_all(self) -> None:
        """SIGTERM every running trial: each saves a checkpoint and ends KILLED; it is
        retried from there when the search is continued (unless bad input stopped it)."""
        self._stopping = True
        for running in self._running.values():
            running.process.send_signal(signal.SIGTERM)
        for name, running in list(self._running.items()):
            code = running.process.wait()
            del self._running[name]
            self._ended(running, code)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else f"the trial failed; see {log}"
