"""Checkpoints on a filesystem that fills up: the run fails loudly, loses no metric, resumes.

A real tmpfs, small enough to fill after a few checkpoints (its metrics journal on it too).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from experiments.cli import main
from tests.experiments.configs import write_config
from tests.mounts import resize, small_tmpfs

STEPS = 4 * 8  # 4 epochs of 8 batches (240 examples, 32 a batch)


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "step/batch_loss"))


def test_a_full_disk_fails_the_run_with_one_line_and_the_last_checkpoint_resumes(
    in_tmp: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with small_tmpfs(in_tmp / "disk", 160) as disk:
        config = write_config(
            in_tmp,
            {
                "trainer.epochs": 4,
                "trainer.log_every_n_steps": 1,
                "tracking.experiment": "full-disk",
                "tracking.tensorboard_dir": str(in_tmp / "tb"),
                "checkpoint.dir": str(disk / "{run_id}"),
                "checkpoint.every_n_steps": 2,
                "checkpoint.keep_last": 100,  # each ~32 KiB: the disk fills after a few
            },
        )
        with pytest.warns(UserWarning, match=r"could not be written \(No space left") as warned:
            assert main(["run", str(config), "--tracking-uri", mlflow_uri]) == 1
        err = capsys.readouterr().err
        client = MlflowClient(mlflow_uri)
        (run,) = client.search_runs([client.get_experiment_by_name("full-disk").experiment_id])
        run_id = run.info.run_id
        failed = [line for line in err.splitlines() if line.startswith("harness: training")]
        assert len(failed) == 1 and "Traceback" not in err, err
        assert failed[0].startswith(
            f"harness: training failed: checkpoints cannot be written to {disk / run_id} "
            "(No space left on device; the last 3 saves failed); the last one written, ckpt-"
        )
        assert sum("the next update saves again" in str(w.message) for w in warned) == 2
        assert run.info.status == "FAILED"
        # Every step trained so far reached MLflow, once (its journal on the same full disk).
        logged = _steps(client, run_id)
        assert logged == list(range(1, len(logged) + 1)) and 6 <= len(logged) < STEPS

        resize(disk, 4096)  # space freed
        assert main(["resume", run_id, "--tracking-uri", mlflow_uri]) == 0
        assert client.get_run(run_id).info.status == "FINISHED"
        assert _steps(client, run_id) == list(range(1, STEPS + 1))  # each step once
