"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines[:20] if line.strip().startswith("python3 -m venv")]


def test_readme_opens_with_a_run_command_and_a_test_command() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert "harness run experiments/configs/" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert _readme_commands()[1] in ci_lines


def test_every_link_between_the_readme_and_the_docs_resolves() -> None:
    import re

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.name} links {target}"
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250  # the reference lives in docs/, linked from here
    for page in ("config", "training", "checkpoints", "search", "ui", "engines", "own-code"):
        assert f"](docs/{page}.md)" in readme
