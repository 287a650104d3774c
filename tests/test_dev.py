"""``./dev``: what each command installs, and its usage messages.

Issue 26, item 5: ``./dev run`` installed the whole test toolchain (Prometheus,
Chromium, a JRE, kubectl, pyspark: a 2 GB ``.venv``) just to show the demo.
The script runs here with a PATH that holds only stand-ins for ``apt-get`` and
``sudo`` (which record what they were asked for) and the few tools it uses, so
every ``need`` finds its command missing and asks for it, and with a virtual
environment whose install stamps are current, so pip is not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DEV = ROOT / "dev"
BASH = shutil.which("bash") or "/bin/bash"

#: Every Debian package the test toolchain needs and running the system does not.
TEST_ONLY_PACKAGES = {"openssl", "prometheus", "kubernetes-client", "openjdk-17-jre-headless"}


def fake_machine(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment for ``./dev``: stand-in ``apt-get``/``sudo`` and a ready ``.venv``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "apt-get.log"
    for tool in ("dirname", "id"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {asked}\n')
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for stub in ("apt-get", "sudo"):
        (bin_dir / stub).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    freshrec = Path(sys.executable).with_name("freshrec")
    assert freshrec.exists(), "no freshrec script beside the interpreter: ./dev setup"
    (venv / "bin" / "freshrec").symlink_to(freshrec)
    for extra in ("local", "dev"):
        (venv / f".freshrec-installed-{extra}").touch()
    env = {"PATH": str(bin_dir), "VENV": str(venv), "HOME": str(tmp_path), "APT_UPDATED": "1"}
    return env, asked


def packages_asked(asked: Path) -> set[str]:
    if not asked.exists():
        return set()
    return {line.split()[-1] for line in asked.read_text().splitlines()}


def test_run_installs_what_running_needs_and_test_adds_the_rest(tmp_path: Path) -> None:
    env, asked = fake_machine(tmp_path)
    run = subprocess.run(
        [BASH, str(DEV), "run", "--no-such-flag"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    run_packages = packages_asked(asked)
    asked.unlink(missing_ok=True)
    setup = subprocess.run(
        [BASH, str(DEV), "setup"], env=env, capture_output=True, text=True, timeout=60
    )
    assert setup.returncode == 0, setup.stderr
    assert run_packages == {"redis-server"}, run.stderr
    assert TEST_ONLY_PACKAGES | {"chromium", "redis-server"} <= packages_asked(asked)


def test_run_with_a_wrong_flag_shows_the_demos_usage(tmp_path: Path) -> None:
    env, _ = fake_machine(tmp_path)
    done = subprocess.run(
        [BASH, str(DEV), "run", "--no-such-flag"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "\nusage: freshrec demo " in done.stderr, done.stderr
    assert "freshrec demo: error: unrecognized arguments: --no-such-flag" in done.stderr


@pytest.mark.parametrize("args", [[], ["bogus"]])
def test_dev_without_a_known_command_prints_a_clean_usage(args: list[str]) -> None:
    done = subprocess.run(
        [str(DEV), *args], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert done.returncode == 2
    usage = done.stderr[done.stderr.index("usage: ./dev COMMAND") :]
    assert "#" not in usage and "  run " in usage and "  test " in usage, done.stderr
