"""The checkpoint store on a real disk: atomic writes, checksums, retention, the writer thread."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from harness.checkpoints import CheckpointStore, DamagedCheckpoint
from harness.checkpoints import store as checkpoints


def _state(value: float) -> dict[str, object]:
    return {"model": [np.full((3, 2), value, "float32")], "random": {"python": (3, (1, 2), None)}}


def _names(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def test_a_saved_state_loads_back_with_its_position_and_metadata(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "run")
    path = store.save(
        _state(1.5), step=12, epoch=1, batch=4, metrics={"val_loss": 0.3}, metadata={"run_id": "r"}
    )
    store.wait()  # written on another thread
    info, state = store.load(path)
    np.testing.assert_array_equal(state["model"][0], np.full((3, 2), 1.5, "float32"))
    assert state["random"] == {"python": (3, (1, 2), None)}
    assert (info.step, info.epoch, info.batch, info.epoch_end) == (12, 1, 4, False)
    assert info.metadata == {"run_id": "r"} and info.monitor is None  # no monitor configured
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "state.bin"]
    assert len(store.write_s) == 1


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_last=3)
    store.save(_state(1.0), step=1, epoch=0, batch=1)
    latest = store.save(_state(2.0), step=2, epoch=0, batch=2)
    store.wait()
    payload = (latest / "state.bin").read_bytes()
    (latest / "state.bin").write_bytes(payload[: len(payload) // 2])  # a torn write
    with pytest.warns(UserWarning, match=r"ckpt-000002: .*checksum.*resuming from ckpt-000001"):
        info, state = store.load_latest()  # type: ignore[misc]
    assert info.step == 1 and state["model"][0][0, 0] == 1.0
    # The damaged one is moved aside, kept for inspection: the next save takes a new name.
    assert _names(tmp_path) == ["ckpt-000001", "damaged-ckpt-000002"]
    store.save(_state(3.0), step=3, epoch=0, batch=3)
    store.wait()
    assert _names(tmp_path) == ["ckpt-000001", "ckpt-000003", "damaged-ckpt-000002"]
    for name in ("ckpt-000001", "ckpt-000003"):
        (tmp_path / name / "manifest.json").write_text("{garbage")
    with pytest.raises(DamagedCheckpoint, match="no intact checkpoint"):
        CheckpointStore(tmp_path).load_latest()
    assert _names(tmp_path) == [
        "damaged-ckpt-000001", "damaged-ckpt-000002", "damaged-ckpt-000003"
    ]  # fmt: skip
    reopened = CheckpointStore(tmp_path)  # a garbage manifest never blocks the next save
    reopened.save(_state(4.0), step=4, epoch=0, batch=4)
    reopened.wait()
    assert reopened.load_latest()[0].step == 4  # type: ignore[index]
    assert CheckpointStore(tmp_path / "empty").load_latest() is None


def test_a_failed_write_leaves_the_previous_checkpoints_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path)
    store.save(_state(1.0), step=1, epoch=0, batch=1)
    store.wait()

    def full_disk(path: Path, payload: object) -> None:
        path.write_bytes(b"the first bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "write_synced", full_disk)
    store.save(_state(2.0), step=2, epoch=0, batch=2)
    with pytest.warns(UserWarning, match="could not be written.*No space left"):
        store.wait()
    assert _names(tmp_path) == ["ckpt-000001"]
    info, _ = store.load_latest()  # type: ignore[misc]
    assert info.step == 1


def test_saves_failing_in_a_row_or_the_final_one_stop_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.checkpoints import CheckpointsFailing

    real = checkpoints.write_synced
    failing = {"on": True}

    def full_disk(path: Path, payload: object) -> None:
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, payload)

    store = CheckpointStore(tmp_path, keep_last=5)
    store.save(_state(1.0), step=1, epoch=0, batch=1)
    store.wait()
    monkeypatch.setattr(checkpoints, "write_synced", full_disk)
    for step in (2, 3):  # two failures warn
        store.save(_state(step), step=step, epoch=0, batch=step)
        with pytest.warns(UserWarning, match="the next update saves again"):
            store.wait()
    assert store.last_failed
    failing["on"] = False  # space freed: a success resets the count
    store.save(_state(4.0), step=4, epoch=0, batch=4)
    store.wait()
    assert not store.last_failed
    failing["on"] = True
    for step in (5, 6):
        store.save(_state(step), step=step, epoch=0, batch=step)
        with pytest.warns(UserWarning, match=r"could not be written \(No space left on device"):
            store.wait()
    store.save(_state(7.0), step=7, epoch=0, batch=7)
    with pytest.raises(CheckpointsFailing) as failed:  # the third in a row
        store.wait()
    message = str(failed.value)
    assert message.startswith(f"checkpoints cannot be written to {tmp_path} (No space left")
    assert "the last 3 saves failed" in message and "ckpt-000004 (step 4), is intact" in message
    assert _names(tmp_path) == ["ckpt-000001", "ckpt-000004"]  # no debris

    final = CheckpointStore(tmp_path / "final")
    final.save(_state(1.0), step=1, epoch=0, batch=1)
    with pytest.raises(
        CheckpointsFailing,
        match=r"the last save failed\); the last one "
        r"written, none, is intact",
    ):
        final.wait(final=True)  # the last save of a run may not fail quietly


def test_debris_of_a_crash_mid_write_is_removed_and_other_files_are_kept(tmp_path: Path) -> None:
    (tmp_path / ".tmp-ckpt-000002-4242").mkdir()  # a write the process died in
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "other-run").mkdir()
    store = CheckpointStore(tmp_path, keep_last=1)
    for step in (1, 2, 3):
        store.save(_state(step), step=step, epoch=0, batch=step)
    store.wait()
    assert _names(tmp_path) == ["ckpt-000003", "notes.txt", "other-run"]


def test_retention_keeps_the_last_the_best_and_every_nth_epoch_across_a_reopen(
    tmp_path: Path,
) -> None:
    def open_store() -> CheckpointStore:
        return CheckpointStore(
            tmp_path, keep_last=2, keep_best=1, monitor="val_loss", keep_every_n_epochs=2
        )

    store = open_store()
    losses = {1: 0.9, 2: 0.4, 3: 0.6}  # epoch → val_loss: the best is epoch 2's
    for epoch, loss in losses.items():
        store.save(_state(epoch), step=epoch * 10 - 5, epoch=epoch - 1, batch=5)  # mid-epoch
        store.save(
            _state(epoch), step=epoch * 10, epoch=epoch, batch=0, epoch_end=True,
            metrics={"val_loss": loss},
        )  # fmt: skip
    store.wait()
    # ckpt 4: end of epoch 2, the best and an every-2nd-epoch one; 5, 6: the last two.
    assert _names(tmp_path) == ["ckpt-000004", "ckpt-000005", "ckpt-000006"]
    reopened = open_store()  # a resumed run: the sequence and the rules go on
    for epoch, loss in {4: 0.8, 5: 0.7}.items():
        reopened.save(
            _state(epoch), step=epoch * 10, epoch=epoch, batch=0, epoch_end=True,
            metrics={"val_loss": loss},
        )  # fmt: skip
    reopened.wait()
    kept = {info.sequence: info for info in reopened.checkpoints()}
    assert sorted(kept) == [4, 7, 8]  # 7 is epoch 4's end: permanent; 8 the last; 4 the best
    assert kept[4].monitor == 0.4 and kept[7].permanent and not kept[8].permanent


def test_bad_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        CheckpointStore(tmp_path, keep_last=0)
    with pytest.raises(ValueError, match="monitor"):
        CheckpointStore(tmp_path, keep_best=1)


@pytest.fixture
def deterministic_ops() -> None:
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


@pytest.mark.usefixtures("deterministic_ops")
@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_the_loop_saves_at_update_boundaries_and_on_a_stop_and_resumes_exactly(
    engine: str, tmp_path: Path
) -> None:
    from harness import TrainingInterrupted
    from harness.checkpoints import Checkpointing
    from tests.harness.problems import weights
    from tests.harness.state_problem import build_loop

    uninterrupted = build_loop(engine, accumulation_steps=2)
    expected_history = uninterrupted.run().history
    expected = weights(uninterrupted.model)

    store = CheckpointStore(tmp_path, keep_last=10)
    policy = Checkpointing(store, every_n_steps=3, every_n_epochs=1, metadata={"run_id": "r1"})
    # A stop after the 5th batch of epoch 1 waits for the update boundary, the 6th.
    loop = build_loop(engine, stop_at=(1, 4), accumulation_steps=2, checkpointing=policy)
    with pytest.raises(TrainingInterrupted):
        loop.run()
    saved = store.checkpoints()
    # 10 batches (5 updates) an epoch: at the start, every 3 updates (6 batches), each epoch
    # end, the stop.
    assert [(c.epoch, c.batch, c.step, c.epoch_end) for c in saved] == [
        (0, 0, 0, False),  # before the first update: a run killed this early resumes too
        (0, 6, 3, False),
        (1, 0, 5, True),
        (1, 6, 8, False),  # also where the stop came: saved once
    ]
    assert saved[2].monitor is None and saved[-1].metadata == {"run_id": "r1"}

    # From the stop, and from step 0 (the optimizer not built yet): the same end, exactly.
    for start in (saved[-1], saved[0]):
        fresh = build_loop(engine, accumulation_steps=2, checkpointing=policy)
        _, state = store.load(start.path)
        fresh.restore_state(state)
        history = fresh.run().history
        for got, want in zip(weights(fresh.model), expected, strict=True):
            np.testing.assert_array_equal(got, want)
        assert history == expected_history
        final = store.checkpoints()[-1]
        assert (final.epoch, final.batch, final.step, final.epoch_end) == (3, 0, 15, True)


@pytest.mark.usefixtures("deterministic_ops")
@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_an_epoch_k_does_not_divide_resumes_exactly_from_a_stop(
    engine: str, tmp_path: Path
) -> None:
    """10 batches an epoch with k=3: updates of 3, 3, 3 and 1 micro-batches, 4 an epoch."""
    from harness import TrainingInterrupted
    from harness.checkpoints import Checkpointing
    from tests.harness.problems import weights
    from tests.harness.state_problem import EPOCHS, build_loop

    uninterrupted = build_loop(engine, accumulation_steps=3)
    expected_history = uninterrupted.run().history
    expected = weights(uninterrupted.model)
    assert int(uninterrupted.model.optimizer.iterations) == 4 * EPOCHS

    store = CheckpointStore(tmp_path, keep_last=10)
    policy = Checkpointing(store, every_n_epochs=1, metadata={"run_id": "r1"})
    # A stop after the 8th batch of epoch 1 waits for the update boundary: its 9th.
    loop = build_loop(engine, stop_at=(1, 7), accumulation_steps=3, checkpointing=policy)
    with pytest.raises(TrainingInterrupted):
        loop.run()
    last = store.checkpoints()[-1]
    assert (last.epoch, last.batch, last.step) == (1, 9, 4 + 3)
    fresh = build_loop(engine, accumulation_steps=3, checkpointing=policy)
    fresh.restore_state(store.load(last.path)[1])
    history = fresh.run().history
    for got, want in zip(weights(fresh.model), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert history == expected_history


class _SlowSteps(keras.callbacks.Callback):
    """Steps slower than a checkpoint write: the writer's outcome is known by the next one."""

    stateless = True

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        time.sleep(0.05)


@pytest.mark.parametrize("engine", ["fit", "custom"])
def test_a_failed_save_is_retried_at_the_next_update_and_a_failed_last_save_stops_the_run(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness import TrainingLoop
    from harness.checkpoints import Checkpointing, CheckpointsFailing
    from tests.harness.problems import make_data, make_model

    real = checkpoints.write_synced

    def flaky_disk(path: Path, payload: bytes) -> None:
        if path.name == "manifest.json" and json.loads(payload)["step"] in (3, 30):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, payload)

    monkeypatch.setattr(checkpoints, "write_synced", flaky_disk)
    store = CheckpointStore(tmp_path, keep_last=20)
    loop = TrainingLoop(
        make_model(), make_data(), engine=engine, epochs=3, callbacks=[_SlowSteps()],
        checkpointing=Checkpointing(store, every_n_steps=3),
    )  # fmt: skip
    with pytest.warns(UserWarning, match="could not be written"):
        with pytest.raises(CheckpointsFailing, match="the last save failed"):
            loop.run()  # 3 epochs of 10 updates, a save every 3 and at each epoch's end
    # Step 3's save failed: retried at the next update (4), not the next due one (6); the
    # last (step 30) failed and stopped the run.
    assert [c.step for c in store.checkpoints()] == [0, 4, 7, 10, 13, 16, 19, 20, 23, 26, 29]


class _Handle:
    """Not plain data: a checkpoint cannot hold it."""


class _HoldsAHandle(keras.callbacks.Callback):
    def state(self) -> dict[str, object]:
        return {"epoch": 1, "handle": _Handle()}

    def restore(self, state: dict[str, object]) -> None:
        pass


def test_a_callback_whose_state_is_not_plain_data_is_refused_by_name(tmp_path: Path) -> None:
    from harness import TrainingLoop
    from harness.checkpoints import Checkpointing, NotPlainData
    from tests.harness.problems import make_data, make_model

    policy = Checkpointing(CheckpointStore(tmp_path), every_n_steps=2)
    loop = TrainingLoop(
        make_model(), make_data(), callbacks=[_HoldsAHandle()], checkpointing=policy
    )
    with pytest.raises(NotPlainData, match=r"state.callbacks._HoldsAHandle.handle is _Handle"):
        loop.run()
    assert list(tmp_path.iterdir()) == []  # nothing half-written
