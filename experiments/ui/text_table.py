"""A table that fits the terminal: whole cells, never wrapped, least useful columns dropped.

Each column has a rank (0 is kept last); when the columns do not fit the width, the ones of
the highest rank go first, and the caller says which were left out.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass

GAP = "  "


@dataclass(frozen=True)
class Column:
    """A column: its header, its cells (already formatted), how useful it is (0 = the most)
    and whether its cells align right (numbers)."""

    header: str
    cells: Sequence[str]
    rank: int
    right: bool = False

    @property
    def width(self) -> int:
        return max([len(self.header), *(len(c) for c in self.cells)])


def terminal_width() -> int | None:
    """The width to fit: $COLUMNS, else the terminal's; None (no limit) when piped."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def fit(columns: Sequence[Column], width: int | None) -> tuple[list[Column], list[Column]]:
    """The columns that fit `width` (in their order) and the ones left out."""
    kept = list(columns)
    dropped: list[Column] = []

    def total() -> int:
        return sum(c.width for c in kept) + len(GAP) * (len(kept) - 1)

    while width is not None and len(kept) > 1 and total() > width:
        worst = max(kept, key=lambda c: (c.rank, kept.index(c)))  # the rightmost of the worst
        if worst.rank == 0:
            break  # the essential columns stay even if the terminal is narrower
        kept.remove(worst)
        dropped.append(worst)
    return kept, dropped


def render(columns: Sequence[Column]) -> list[str]:
    """The table's lines: header, rule, rows; no line has trailing spaces."""
    if not columns:
        return []
    widths = [c.width for c in columns]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(w) if column.right else cell.ljust(w)
            for cell, w, column in zip(cells, widths, columns, strict=True)
        ]
        return GAP.join(parts).rstrip()

    rows = len(columns[0].cells)
    return [
        line([c.header for c in columns]),
        GAP.join("-" * w for w in widths),
        *(line([c.cells[i] for c in columns]) for i in range(rows)),
    ]


def listed(names: Sequence[str], limit: int = 6) -> str:
    """`a, b, c` or, past `limit` names, `a, b, c, d, e, f and 14 more`."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"
