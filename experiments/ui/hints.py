"""Commands to print as hints, written so they work when the user types them.

The README installs into `.venv` and never activates it, so `harness` is often not on PATH:
a hint then names the script beside this Python (`.venv/bin/harness`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def command(name: str) -> str:
    """`name` (e.g. `harness`, `tensorboard`) as the user can type it here: the bare name
    when it is on PATH and is this environment's, else the path of this environment's
    script (relative to the working directory when it is inside it)."""
    script = Path(sys.executable).parent / name
    found = shutil.which(name)
    if not script.exists():
        return name
    if found is not None and Path(found).resolve() == script.resolve():
        return name
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else str(script)


def line(name: str, *args: str) -> str:
    """A whole command line: `command(name)` then `args`, quoted for the shell."""
    return shlex.join([command(name), *args])
