"""Run a command in a real pseudo-terminal of a given width, as a person's terminal would."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Sequence
from pathlib import Path


def in_terminal(
    argv: Sequence[str], *, columns: int, cwd: Path, env: dict[str, str], timeout: float = 120
) -> str:
    """What `argv` prints on a terminal `columns` wide (stdout and stderr; `\\r\\n` as
    `\\n`). COLUMNS is not set: the program must ask the terminal."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    process = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=timeout)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
