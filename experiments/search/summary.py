"""What `harness search` prints at its end: the best trial, the counts, where to look next."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from experiments.ui.hints import line
from experiments.ui.links import run_url, ui_address
from experiments.ui.numbers import readable

if TYPE_CHECKING:
    from experiments.search.start import SearchResult


def params_text(params: dict[str, Any]) -> str:
    """`optimizer.name=adam, optimizer.learning_rate=2.372e-02, ...`, values rounded."""
    return ", ".join(f"{path}={readable(value, path)}" for path, value in params.items())


def summary_lines(result: SearchResult) -> list[str]:
    """The closing lines of a search, each short enough for an 80-column terminal."""
    total = sum(result.counts.values())
    lines = [f"study '{result.study}' done: {total} trials ({result.counts_text})"]
    best = result.best
    if best is not None:
        values = ", ".join(
            f"{metric} {readable(float(value))}"
            for metric, value in zip(result.metrics, best["values"], strict=False)
        )
        run = f" (run {best['run_id'][:8]})" if best.get("run_id") else ""
        lines.append(f"  best:       trial {best['number']}, {values}{run}")
        params = best["params"].items()
        lines += [f"              {path} = {readable(v, path)}" for path, v in params]
    else:
        lines.append("  best:       no trial completed")
    uri = result.tracking_uri
    if uri:
        address = ui_address(uri)
        serving = "" if uri.startswith("http") else "  (after harness ui)"
        lines.append(f"  parent run: {result.parent_run_id}{serving}")
        lines.append(f"    {run_url(address, result.experiment_id, result.parent_run_id)}")
        flags = ["--tracking-uri", uri]
        lines.append(f"  trials:     {line('harness', 'runs', '--study', result.study, *flags)}")
        lines.append(f"  MLflow UI:  {line('harness', 'ui', *flags)}")
    return lines
