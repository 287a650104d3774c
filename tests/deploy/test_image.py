"""The image, built and run: the worker, the API and ``freshrec retrain`` as containers.

Issue 26, item 11: the ``Dockerfile`` passed hadolint but had never been built.
Debian's podman builds and runs it here with the ``runc`` runtime (crun fails on
this kernel's cgroups). There is no registry to pull a base image from, so the
base is made from Debian's packages (``debootstrap --variant=minbase`` with
python3 and libgomp1, imported once per machine as :data:`BASE`) and
passed as ``PYTHON_IMAGE``; the build installs from wheels built on the host
(``pip wheel``), not from an index (``OFFLINE=1``). The containers share the
host's network, so they reach the test's broker and Redis on loopback, and the
model store is a host directory mounted into the worker and the retrain. An
event published on the host then reaches a list the containers' API serves.

Skipped only where podman cannot run (it says why); ``./dev setup`` installs
podman, runc and debootstrap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freshrec.settings import Settings
from freshrec.stack import wait_until
from models.synthetic import generate
from tests.api_process import get_json, quick_processes
from tests.streams.worker import publish, watch

#: debootstrap (once per machine, ~3 min), wheels and the build (~2 min) come first
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).parents[2]
#: The base's tag names what debootstrap put in it: python3, its venv module, and libgomp1 (the
#: OpenMP runtime implicit's ALS needs: the retrain died without it).
BASE = "localhost/freshrec-base:bookworm-python3-gomp"
#: What the build context holds: what the Dockerfile copies.
CONTEXT = [
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "freshrec",
    "schemas",
    "models",
    "retrain",
    "streams",
    "serving",
    "cli",
]
RUN_FLAGS = [
    "--network",
    "host",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
]


def podman(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", "--runtime", "runc", *args], capture_output=True, text=True, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Context:
    """The build context, and ``pip wheel`` filling its ``wheels/`` in the background."""

    path: Path
    wheels: subprocess.Popen[bytes]

    def ready(self) -> Path:
        """The context once its wheels are built."""
        _, err = self.wheels.communicate(timeout=900)
        assert self.wheels.returncode == 0, f"pip wheel failed:\n{err.decode(errors='replace')}"
        return self.path


@pytest.fixture(scope="session")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    """freshrec's sources as the Dockerfile copies them, with the wheels of everything it
    installs, built here (offline in the image) while :func:`base_image` runs debootstrap:
    they took a quarter of a minute, one after the other."""
    context = tmp_path_factory.mktemp("image-context")
    for name in CONTEXT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, context / name)
    wheels = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--wheel-dir",
            str(context / "wheels"),
            ".[s3]",
            "setuptools",  # the offline build builds freshrec's own wheel with them
            "wheel",
        ],
        cwd=context,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield Context(context, wheels)
    finally:
        if wheels.poll() is None:
            wheels.kill()
            wheels.wait()


@pytest.fixture(scope="session")
def base_image(context: Context) -> str:
    """The Debian base (python3 and its venv module), made by debootstrap once per machine
    (the wheels of ``context`` build meanwhile)."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (./dev setup installs it: apt-get install podman)")
    info = subprocess.run(
        ["podman", "--runtime", "runc", "info"], capture_output=True, text=True, timeout=120
    )
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip().splitlines()[-1:]}")
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return BASE
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    assert os.path.exists(debootstrap), "debootstrap is missing: ./dev setup installs it"
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"freshrec-base-{os.getpid()}"
    try:
        subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                "--include=python3,python3-venv,libgomp1",
                "bookworm",
                str(root),
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "--runtime", "runc", "import", "-", BASE],
            stdin=tar.stdout,
            capture_output=True,
            timeout=600,
        )
        assert tar.wait(600) == 0 and imported.returncode == 0, imported.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return BASE


@pytest.fixture(scope="session")
def image(base_image: str, context: Context) -> Iterator[str]:
    """freshrec's image from the repository's Dockerfile, offline: wheels built here."""
    tag = f"localhost/freshrec-test:{os.getpid()}"
    podman(
        "build",
        *RUN_FLAGS[2:],  # the ulimits: runc may not raise them on this kernel
        "--build-arg",
        f"PYTHON_IMAGE={base_image}",
        "--build-arg",
        "OFFLINE=1",
        "-t",
        tag,
        str(context.ready()),
        timeout=900,
    )
    try:
        yield tag
    finally:
        podman("rmi", "-f", tag, check=False)


def container_env(settings: Settings) -> list[str]:
    env = settings.replace(model_store="/store", data_dir="/var/lib/freshrec/worker").as_env()
    return [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]


def metric_total(url: str, name: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    )


def test_the_images_worker_api_and_retrain_turn_an_event_into_a_list(
    image: str, settings: Settings, topics: list[str], tmp_path: Path
) -> None:
    quick = quick_processes(settings).replace(api_host="127.0.0.1", worker_web_host="127.0.0.1")
    store = tmp_path / "store"
    store.mkdir()
    store.chmod(0o777)  # the image runs as uid 10001
    env = container_env(quick)
    mount = ["-v", f"{store}:/store"]
    name = f"freshrec-test-{os.getpid()}"
    started: list[str] = []
    try:
        for part in ("worker", "api"):
            podman("run", "-d", "--name", f"{name}-{part}", *RUN_FLAGS, *mount, *env, image, part)
            started.append(f"{name}-{part}")
        api = f"http://127.0.0.1:{quick.api_port}"
        metrics = f"http://127.0.0.1:{quick.worker_web_port}/metrics"

        def up() -> bool:
            for container in started:
                state = podman("inspect", "-f", "{{.State.Running}}", container).stdout.strip()
                assert state == "true", podman("logs", container, check=False).stderr
            try:
                return (
                    get_json(api + "/healthz")[0] == 200
                    and metric_total(metrics, "freshrec_worker_users") >= 0
                )
            except OSError:
                return False

        wait_until(up, 120, "the worker and API containers")
        log = generate(200, 48, 4000, factors=8, seed=5).log
        history = [
            watch(f"h-{n}", log.users.ids[u], log.items.ids[i], int(ts), 1800.0)
            for n, (u, i, ts) in enumerate(
                zip(log.user.tolist(), log.item.tolist(), log.ts.tolist(), strict=True)
            )
        ]
        publish(quick, history)

        def held() -> bool:
            return metric_total(metrics, "freshrec_worker_events_consumed_total") >= len(history)

        wait_until(held, 180, "the worker container to read the history")
        time.sleep(2)  # the last batch's state reaches the changelog within a commit
        retrain = podman(
            "run",
            "--rm",
            *RUN_FLAGS,
            *mount,
            *env,
            image,
            "retrain",
            "--tune-budget-s",
            "0",
            check=False,
        )
        assert retrain.stdout.strip(), retrain.stderr
        summary: dict[str, Any] = json.loads(retrain.stdout.strip().splitlines()[-1])
        assert retrain.returncode == 0, retrain.stderr
        assert summary["published"] and summary["snapshot"]["source"] == "changelog"

        newest = int(log.ts.max()) + 1000
        publish(quick, [watch("pia-1", "pia", log.items.ids[0], newest, 1800.0)])

        def personal() -> bool:
            status, body = get_json(api + "/recs/pia")
            return status == 200 and body["source"] == "personal"

        wait_until(personal, 120, "pia's personal list from the containers")
        body = get_json(api + "/recs/pia")[1]
        assert body["model_version"] == summary["version"]
        assert body["updated_at"] == newest
    finally:
        for container in started:
            podman("rm", "-f", container, check=False)
