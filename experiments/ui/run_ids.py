"""Run ids as people type them: a unique prefix, as git takes a commit's."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.errors import UsageError

SHORT = 8  # shown; enough to be unique among thousands of runs
FULL = 32  # MLflow's run ids: 32 hex digits


def short_ids(run_ids: Sequence[str]) -> list[str]:
    """The shortest prefixes, at least `SHORT` long, that tell these runs apart."""
    length = SHORT
    while length < FULL and len({r[:length] for r in run_ids}) < len(set(run_ids)):
        length += 1
    return [r[:length] for r in run_ids]


def resolve_run_id(tracking_uri: str, text: str) -> str:
    """The full id of the one run whose id starts with `text`.

    Raises:
        UsageError: no run, or several runs, start with it (the matches are listed).
    """
    from experiments.tracking_setup import tracking_store
    from tracking.mlflow.queries import runs_with_prefix

    text = text.strip()
    if len(text) == FULL:
        return text  # a whole id: the command says if the store has no such run
    if len(text) < 4 or not all(c in "0123456789abcdef" for c in text.lower()):
        raise UsageError(
            f"run id '{text}': a run id is hex digits, at least 4 of them (a unique prefix "
            "of the id harness runs shows), e.g. harness resume 3f2a9c1d"
        )
    found = runs_with_prefix(tracking_store(tracking_uri, create=False), text.lower())
    if len(found) == 1:
        return str(found[0].info.run_id)
    if not found:
        raise UsageError(
            f"run id '{text}': no run at {tracking_uri} has an id starting with it. "
            "harness runs lists the runs there (or pass the store's --tracking-uri)"
        )
    names = ", ".join(f"{r.info.run_id[:12]} ({r.info.run_name})" for r in found[:5])
    more = " ..." if len(found) > 5 else ""
    raise UsageError(
        f"run id '{text}' is ambiguous: {len(found)}{'+' if len(found) == 10 else ''} runs "
        f"start with it: {names}{more}. Type more of the id"
    )
