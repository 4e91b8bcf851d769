"""Printed commands work as typed, with the venv activated or not."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from experiments.ui.hints import command, line

BIN = Path(sys.executable).parent


@pytest.mark.skipif(not (BIN / "harness").exists(), reason="harness is not installed here")
def test_a_script_not_on_path_is_named_by_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv not activated
    monkeypatch.chdir(BIN.parent.parent)  # the project folder holding .venv
    assert command("harness") == os.path.relpath(BIN / "harness")
    assert Path(command("harness")).resolve() == (BIN / "harness").resolve()
    monkeypatch.chdir(Path(tempfile.mkdtemp()))  # a folder outside the project
    assert command("harness") == str(BIN / "harness")  # the absolute path


@pytest.mark.skipif(not (BIN / "harness").exists(), reason="harness is not installed here")
def test_an_activated_environment_prints_the_bare_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{BIN}:/usr/bin:/bin")
    assert command("harness") == "harness"
    assert line("harness", "runs", "--study", "my study") == "harness runs --study 'my study'"


def test_a_name_this_environment_lacks_stays_bare() -> None:
    assert command("no-such-script-here") == "no-such-script-here"
