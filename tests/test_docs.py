"""The documentation stands on its own: nothing points outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).parents[1]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def tracked(*patterns: str) -> list[Path]:
    """The files git tracks (or would: untracked but not ignored) matching ``patterns``."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).exists()]


def test_docs_do_not_point_outside_the_repository() -> None:
    """Issue 13.9: the docs sent readers to ../shared/DESIGN.md, which a clone does not have;
    every relative link must resolve to a file inside the repository."""
    problems = []
    for path in tracked("*.md", "*.py"):
        text = path.read_text()
        rel = path.relative_to(REPO)
        if path != Path(__file__) and ("DESIGN.md" in text or "../shared" in text):
            problems.append(f"{rel}: mentions a document outside the repository")
        if path.suffix != ".md":
            continue
        for target in _LINK.findall(text):
            if "://" in target or target.startswith("mailto:"):
                continue
            resolved = (path.parent / target).resolve()
            if not resolved.is_relative_to(REPO) or not resolved.exists():
                problems.append(f"{rel}: link {target} does not resolve inside the repository")
    assert not problems, "\n".join(problems)
