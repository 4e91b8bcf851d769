"""`--devices`: GPU slots, groups of GPUs, CPU slots pinned to their share of the cores."""

from __future__ import annotations

import os

import pytest

from experiments.errors import UsageError
from experiments.search.launch import Slot, parse_devices


@pytest.mark.parametrize(
    ("text", "slots"),
    [
        (
            "0,1,2,3",
            [
                Slot("gpu0", ("0",)),
                Slot("gpu1", ("1",)),
                Slot("gpu2", ("2",)),
                Slot("gpu3", ("3",)),
            ],
        ),
        ("7", [Slot("gpu7", ("7",))]),
        (" 0, 1 ", [Slot("gpu0", ("0",)), Slot("gpu1", ("1",))]),
        ("0,1:2,3", [Slot("gpu0+1", ("0", "1")), Slot("gpu2+3", ("2", "3"))]),
        ("cpu", [Slot("cpu0")]),
        ("cpu:1", [Slot("cpu0")]),
    ],
)
def test_gpu_and_single_cpu_slots(
    text: str, slots: list[Slot], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3,7")
    assert parse_devices(text) == slots


@pytest.mark.parametrize(("visible", "placeholders"), [("", None), ("0,1", None), ("", "1")])
def test_a_gpu_that_is_not_visible_is_refused_unless_placeholders_are_asked_for(
    visible: str, placeholders: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    if placeholders is None:
        monkeypatch.delenv("HARNESS_PLACEHOLDER_GPUS", raising=False)
        absent = "GPU 7 is" if visible else "GPUs 1, 7 are"
        with pytest.raises(UsageError, match=f"--devices '1,7': {absent} not visible on this"):
            parse_devices("1,7")
    else:
        monkeypatch.setenv("HARNESS_PLACEHOLDER_GPUS", placeholders)
        assert [slot.name for slot in parse_devices("1,7")] == ["gpu1", "gpu7"]


def test_cpu_slots_share_the_cores_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    assert parse_devices("cpu:2") == [Slot("cpu0", cores=(0, 2, 4)), Slot("cpu1", cores=(1, 3))]
    # More slots than cores: they share every core, unpinned.
    assert parse_devices("cpu:6") == [Slot(f"cpu{i}") for i in range(6)]
    assert all(slot.visible == "" for slot in parse_devices("cpu:2"))  # no GPU for a CPU slot


def test_the_default_is_every_visible_gpu_else_one_cpu_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert parse_devices(None) == [Slot("gpu3", ("3",)), Slot("gpu5", ("5",))]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert parse_devices(None) == [Slot("cpu0")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("cpu:0", "CPU slots are written cpu:N with N ≥ 1"),
        ("cpu:x", "CPU slots are written cpu:N with N ≥ 1"),
        ("gpu0", "GPU ids are integers, comma-separated"),
        ("0,,1", "GPU ids are integers, comma-separated"),
        ("0,1:1,2", "a GPU appears twice"),
        ("", "GPU ids are integers"),
    ],
)
def test_bad_devices_are_one_line_naming_the_forms(
    text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    with pytest.raises(UsageError, match=message) as raised:
        parse_devices(text)
    assert f"--devices '{text.strip()}'" in str(raised.value)
    assert "\n" not in str(raised.value)
