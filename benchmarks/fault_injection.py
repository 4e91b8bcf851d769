"""Fault injection: `kill -9` a real `harness run` across its whole life, then recover it.

For each engine, a run of the shipped digits MLP (deterministic, every step logged, a
checkpoint every 10 updates) is killed at one random moment in each phase of its life:

- `before-run`: while it starts, before its MLflow run exists;
- `before-checkpoint`: just after the run exists, before its first checkpoint is in place;
- `mid-epoch`: at a random moment of training;
- `during-save`: while a checkpoint is being written (its `.tmp-ckpt-*` folder exists);
- `during-export`: while the final model is logged (a logged model is PENDING);
- `after-finish`: once it has ended (the kill finds no process).

Then what a user does: `harness resume RUN_ID` (or, when no run was created, `harness run`
again; for a finished run, resume says there is nothing to resume). Each must end with one
FINISHED run, bit-identical final weights and the same value at every step of every metric as
an uninterrupted run, every step logged once, no run RUNNING and no logged model PENDING.

Then the tracking-server outage of issue 25: a real `mlflow server`, killed once the run has
saved a checkpoint, the run killed -9 a few seconds into the outage, the server back, `harness
resume`: the metric points lost (steps missing or doubled against the uninterrupted run).

    python -m benchmarks.fault_injection --seed 1
    python -m benchmarks.fault_injection --phases mid-epoch during-save --engines custom
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PHASES = [
    "before-run",
    "before-checkpoint",
    "mid-epoch",
    "during-save",
    "during-export",
    "after-finish",
]
TIMED = {"epoch_time_s", "steps_per_sec"}  # wall-clock: differ between any two runs
OVERRIDES = [
    "trainer.epochs=4",
    "data.batch_size=16",  # 90 updates an epoch
    "trainer.log_every_n_steps=1",
    "trainer.progress=none",
    "model.params.hidden_units=[256,256]",  # ~1 MB checkpoints: a save takes a moment
    "checkpoint.every_n_steps=20",
    "tracking.system_metrics_every_s=0",
    # Paced (15 ms a batch), so training lasts long enough to be hit at random moments.
    "callbacks=[{class_path: benchmarks.fault_injection:Pace}]",
]


class Pace(keras.callbacks.Callback):
    """Sleeps after each training batch: a run of a few seconds, like a real one's minutes."""

    stateless = True

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        time.sleep(0.015)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    """A folder, a tracking URI and the child processes of one scenario."""

    root: Path
    uri: str
    env: dict[str, str] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    def harness(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "experiments.cli", *args, "--tracking-uri", self.uri],
            cwd=self.root,
            env={**os.environ, "PYTHONPATH": str(ROOT), **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run_args(self, experiment: str, engine: str) -> list[str]:
        return [
            "run",
            str(ROOT / "experiments" / "configs" / "digits_mlp.yaml"),
            *OVERRIDES,
            f"trainer.engine={engine}",
            f"tracking.experiment={experiment}",
            f"tracking.tensorboard_dir={self.root / 'tb'}",
            f"checkpoint.dir={self.root / 'ckpt' / experiment}/{{run_id}}",
        ]

    def client(self) -> Any:
        """The MLflow client of `uri` (opened once)."""
        if "client" not in self.cache:
            from tracking.mlflow import MlflowRuns

            self.cache["client"] = MlflowRuns(self.uri).client
        return self.cache["client"]

    def runs(self, experiment: str) -> list[Any]:
        client = self.client()
        found = client.get_experiment_by_name(experiment)
        return [] if found is None else client.search_runs([found.experiment_id])


def _wait(condition: Callable[[], Any], child: subprocess.Popen[str] | None, what: str) -> Any:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if child is not None and child.poll() is not None:
            return None  # it ended first
        time.sleep(0.002)
    raise TimeoutError(f"no {what} within 5 minutes")


def _finish(child: subprocess.Popen[str], what: str) -> str:
    out, _ = child.communicate(timeout=600)
    if child.returncode != 0:
        raise RuntimeError(f"{what} exited {child.returncode}:\n{out[-3000:]}")
    return out


@dataclass
class Outcome:
    engine: str
    phase: str
    moment: str
    recovery: str
    checks: dict[str, bool]

    @property
    def ok(self) -> bool:
        return all(self.checks.values())


def _history(client: Any, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in run.data.metrics
        if key not in TIMED
    }


def _weights(client: Any, run_id: str) -> list[Any]:
    import mlflow
    import numpy as np

    experiment = client.get_run(run_id).info.experiment_id
    (model,) = [
        m
        for m in client.search_logged_models([experiment])
        if m.source_run_id == run_id and m.name == "model"
    ]
    mlflow.set_tracking_uri(client.tracking_uri)
    return [np.array(w) for w in mlflow.keras.load_model(f"models:/{model.model_id}").weights]


def _pending_models(client: Any, experiment: str) -> int:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    return sum(
        m.status.value == "PENDING" for m in client.search_logged_models([found.experiment_id])
    )


def _checkpoint_writes(lab: Lab, experiment: str) -> list[Path]:
    return list((lab.root / "ckpt" / experiment).glob("*/.tmp-ckpt-*"))


def _kill(child: subprocess.Popen[str]) -> bool:
    """SIGKILL; whether the process was still there to kill."""
    alive = child.poll() is None
    if alive:
        child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    return alive


@dataclass
class Timeline:
    """When an uninterrupted run reached each phase (seconds from its start)."""

    run_created: float
    training_end: float


def reference(lab: Lab, engine: str) -> tuple[str, Timeline]:
    experiment = f"reference-{engine}"
    start = time.monotonic()
    child = lab.harness(*lab.run_args(experiment, engine))
    _wait(lambda: lab.runs(experiment), child, "run")
    created = time.monotonic() - start
    _wait(lambda: _pending_models(lab.client(), experiment), child, "export")
    exporting = time.monotonic() - start
    _finish(child, f"the {engine} reference run")
    (run,) = lab.runs(experiment)
    return run.info.run_id, Timeline(created, exporting)


def inject(lab: Lab, engine: str, phase: str, timeline: Timeline, rng: random.Random) -> Outcome:
    experiment = f"{phase}-{engine}"
    start = time.monotonic()
    child = lab.harness(*lab.run_args(experiment, engine))
    if phase == "before-run":
        time.sleep(rng.uniform(0.5, timeline.run_created * 0.9))
    elif phase == "before-checkpoint":  # the run exists; step 0's save is moments away
        _wait(lambda: lab.runs(experiment), child, "run")
        time.sleep(rng.uniform(0, 0.3))
    elif phase == "mid-epoch":
        _wait(lambda: lab.runs(experiment), child, "run")
        time.sleep(rng.uniform(0, timeline.training_end - timeline.run_created) * 0.9)
    elif phase == "during-save":
        saves = rng.randint(2, 6)  # the n-th write (the first is step 0's)
        seen: set[str] = set()

        def nth_write() -> bool:
            seen.update(p.name for p in _checkpoint_writes(lab, experiment))
            return len(seen) >= saves

        _wait(nth_write, child, f"checkpoint write {saves}")
    elif phase == "during-export":
        _wait(lambda: _pending_models(lab.client(), experiment), child, "export")
    elif phase == "after-finish":
        child.wait(timeout=600)
    moment = f"{time.monotonic() - start:.2f} s"
    killed = _kill(child)
    runs = lab.runs(experiment)
    detail = []
    if phase == "during-save" and not killed:
        detail.append("ended before the write was seen")
    if not runs:
        recovery = "no run existed: harness run again"
        _finish(lab.harness(*lab.run_args(experiment, engine)), "the second harness run")
    else:
        (run,) = runs
        run_id = run.info.run_id
        resume = lab.harness("resume", run_id)
        out, _ = resume.communicate(timeout=600)
        if resume.returncode == 2 and "--resume" in out:  # killed before it logged its config
            recovery = "harness resume: 'run CONFIG --resume ID', done"
            _finish(lab.harness(*lab.run_args(experiment, engine), "--resume", run_id), "run")
        elif resume.returncode != 0:
            raise RuntimeError(f"harness resume exited {resume.returncode}:\n{out[-3000:]}")
        else:
            recovery = "harness resume: " + _what_resume_said(out)
    return _check(lab, engine, phase, f"{moment}{' '.join(detail)}", recovery, experiment)


def _what_resume_said(out: str) -> str:
    for line in out.splitlines():
        if " at optimizer step " in line:
            return "from step " + line.split(" at optimizer step ")[1].split()[0]
        if "from the beginning" in line:
            return "from the beginning"
        if "nothing left to train" in line:
            return "finished, nothing to resume"
    return "?"


REFERENCES: dict[str, str] = {}


def _check(
    lab: Lab, engine: str, phase: str, moment: str, recovery: str, experiment: str
) -> Outcome:
    import numpy as np

    client = lab.client()
    runs = lab.runs(experiment)
    checks = {"one run": len(runs) == 1}
    if len(runs) != 1:
        return Outcome(engine, phase, moment, recovery, checks)
    run = runs[0]
    expected_id = REFERENCES[engine]
    got, want = _history(client, run.info.run_id), _history(client, expected_id)
    checks["FINISHED"] = run.info.status == "FINISHED"
    checks["every step once"] = all(
        len({s for s, _ in got.get(k, [])}) == len(got.get(k, [])) == len(want[k]) for k in want
    )
    checks["same values"] = got == want
    checks["same weights"] = all(
        np.array_equal(a, b)
        for a, b in zip(
            _weights(client, run.info.run_id), _weights(client, expected_id), strict=True
        )
    )
    checks["nothing PENDING"] = _pending_models(client, experiment) == 0
    return Outcome(engine, phase, moment, recovery, checks)


class Server:
    """An `mlflow server` on a sqlite store, killed and started again."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import requests

        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root}/server.db",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],  # fmt: skip
            cwd=self.root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def healthy() -> bool:
            try:
                return requests.get(f"{self.url}/health", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        _wait(healthy, None, "mlflow server")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def outage(root: Path, engine: str, rng: random.Random) -> tuple[int, int, int, str]:
    """(points expected, missing, doubled, when) for one server outage then a kill."""
    server = Server(root)
    server.start()
    lab = Lab(root, server.url, env={"XDG_CACHE_HOME": str(root)})
    try:
        child = lab.harness(*lab.run_args("outage", engine))
        _wait(lambda: list((root / "ckpt" / "outage").glob("*/ckpt-000002")), child, "checkpoint")
        server.kill()
        down = rng.uniform(1.0, 4.0)  # training goes on for about 6 s more
        time.sleep(down)
        _kill(child)
        server.start()
        (run,) = lab.runs("outage")
        _finish(lab.harness("resume", run.info.run_id), "harness resume")
        client = lab.client()
        got = _history(client, run.info.run_id)
        _finish(lab.harness(*lab.run_args("outage-reference", engine)), "reference")
        (ref,) = lab.runs("outage-reference")
        want = _history(client, ref.info.run_id)
    finally:
        server.kill()
    steps = [k for k in want if k.startswith("step/")]
    expected = sum(len(want[k]) for k in steps)
    missing = sum(len({s for s, _ in want[k]} - {s for s, _ in got.get(k, [])}) for k in steps)
    doubled = sum(len(got.get(k, [])) - len({s for s, _ in got.get(k, [])}) for k in steps)
    return expected, missing, doubled, f"server down, run killed {down:.1f} s later"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engines", nargs="+", default=["fit", "custom"])
    parser.add_argument("--phases", nargs="+", default=PHASES, choices=PHASES)
    parser.add_argument("--outages", type=int, default=2, help="outage scenarios per engine")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lab = Lab(root, f"sqlite:///{root / 'mlflow.db'}", env={"XDG_CACHE_HOME": str(root)})
        timelines = {}
        for engine in args.engines:
            REFERENCES[engine], timelines[engine] = reference(lab, engine)
            print(
                f"{engine}: uninterrupted run: created at {timelines[engine].run_created:.1f} s, "
                f"export at {timelines[engine].training_end:.1f} s",
                flush=True,
            )
        for engine in args.engines:
            for phase in args.phases:
                outcome = inject(lab, engine, phase, timelines[engine], rng)
                outcomes.append(outcome)
                failed = [name for name, ok in outcome.checks.items() if not ok]
                print(
                    f"{engine:6} {phase:18} killed at {outcome.moment:10} -> "
                    f"{'OK' if outcome.ok else 'FAILED ' + ', '.join(failed)}; {outcome.recovery}",
                    flush=True,
                )
        lost = []
        for engine in args.engines:
            for index in range(args.outages):
                where = root / f"outage-{engine}-{index}"
                where.mkdir()
                expected, missing, doubled, when = outage(where, engine, rng)
                lost.append(missing + doubled)
                print(
                    f"{engine:6} outage {index + 1}: {when}: {expected} step points expected, "
                    f"{missing} missing, {doubled} doubled",
                    flush=True,
                )
    good = sum(outcome.ok for outcome in outcomes)
    print(f"\n{good} of {len(outcomes)} kills recovered to FINISHED, bit-identical, each step once")
    print(f"outages: {sum(lost)} metric points lost or doubled in {len(lost)} scenarios")
    sys.exit(0 if good == len(outcomes) and not any(lost) else 1)


if __name__ == "__main__":
    main()
