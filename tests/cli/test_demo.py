"""``./dev run`` (``freshrec demo``) as a new user meets it: fails fast, one run per state dir.

The slow path (a model trained, the worker and the API up) is what a developer
runs by hand; these tests pin the failures of issue 13 items 2 and 3, each
bounded in time, in a state directory of their own, leaving nothing running.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import demo
from cli.demo import ChildDied, DemoError, Supervisor, run_lock
from freshrec import stack
from freshrec.stack import free_port, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "cli"]


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def dev_run(state_dir: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [str(REPO / "dev"), "run", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")},
            "VENV": str(Path(sys.executable).parents[1]),
            **env,
        },
    )
    return result, time.monotonic() - started


@pytest.mark.parametrize(
    ("setting", "what"),
    [("FRESHREC_API_PORT", "the API"), ("FRESHREC_WORKER_WEB_PORT", "the worker's web server")],
)
def test_dev_run_with_a_port_taken_fails_fast_naming_the_process_and_the_port(
    tmp_path: Path, held_port: int, setting: str, what: str
) -> None:
    """Issue 13.2: with port 8080 taken ``./dev run`` waited 60 s and printed an HTTP 404
    traceback; with the worker's port taken it said "worker and API are running"."""
    other = "FRESHREC_WORKER_WEB_PORT" if setting == "FRESHREC_API_PORT" else "FRESHREC_API_PORT"
    result, elapsed = dev_run(tmp_path, {setting: str(held_port), other: str(free_port())})
    assert result.returncode == 1, result.stdout + result.stderr
    assert elapsed < 15, f"took {elapsed:.1f}s"
    assert f"{what} cannot listen on 127.0.0.1:{held_port}" in result.stderr
    assert setting in result.stderr and "Traceback" not in result.stderr
    assert stack.read_state(tmp_path) is None  # nothing was started, nothing is left


def test_port_check_ignores_the_previous_runs_closed_connections(held_port: int) -> None:
    """Issue 13.2's port check refused a port that only held TIME_WAIT connections of the
    previous run (the demo's own requests, closed by the API): ``./dev run`` right after a
    Ctrl-C said the API's port was taken, though the API itself (SO_REUSEADDR) binds it."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = int(server.getsockname()[1])
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: its side goes to TIME_WAIT
        client.recv(1)
        client.close()
    demo.check_port_free("API", "127.0.0.1", port, "FRESHREC_API_PORT")
    with pytest.raises(DemoError, match=f"the API cannot listen on 127.0.0.1:{held_port}"):
        demo.check_port_free("API", "127.0.0.1", held_port, "FRESHREC_API_PORT")


def test_missing_events_file_fails_before_anything_starts(tmp_path: Path) -> None:
    """Issue 13.5's audit: ``freshrec demo --events <missing file>`` started the stack and
    trained a model (about 15 s) before the publish found the file missing."""
    state, events = tmp_path / "state", tmp_path / "none.jsonl"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--state-dir", str(state), "--events", str(events)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")},
            "FRESHREC_API_PORT": str(free_port()),
            "FRESHREC_WORKER_WEB_PORT": str(free_port()),
        },
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"freshrec demo: cannot read the events {events}: No such file or "
        "directory; run from the repository's root or give --events a JSON-lines file"
    )
    assert time.monotonic() - started < 10
    assert stack.read_state(state) is None


def test_second_run_in_the_same_state_dir_refuses_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    """Issue 13.3: a second ``./dev run`` tore down the first run's broker and Redis and
    wrote into its logs."""
    first = stack.up(tmp_path)
    try:
        with run_lock(tmp_path):
            (tmp_path / "worker.log").write_text("the first run's log\n")
            result, elapsed = dev_run(tmp_path, {"FRESHREC_API_PORT": str(free_port())})
            assert result.returncode == 1
            assert f"another run (pid {os.getpid()}) is using {tmp_path}" in result.stderr
            assert "--state-dir" in result.stderr
            assert elapsed < 15
            assert stack.running(tmp_path) == first
            assert (tmp_path / "worker.log").read_text() == "the first run's log\n"
        with run_lock(tmp_path):  # released with the first run
            pass
    finally:
        stack.down(tmp_path)


def test_supervisor_names_the_child_that_died_with_its_last_log_lines(tmp_path: Path) -> None:
    """Issue 13.2: a child that died was not noticed; the demo must say which, and why."""
    supervisor = Supervisor()
    env = dict(os.environ)
    sleeper = supervisor.start(
        "API", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "api.log", env
    )
    dying = supervisor.start(
        "worker",
        [
            sys.executable,
            "-c",
            "import sys; print('starting'); print('boom: port in use'); sys.exit(3)",
        ],
        tmp_path / "worker.log",
        env,
    )
    try:
        wait_until(lambda: dying.proc.poll() is not None, 10, "the worker to exit")
        with pytest.raises(ChildDied, match=r"the worker exited with code 3") as died:
            supervisor.check()
        assert "boom: port in use" in str(died.value)
        assert isinstance(died.value, DemoError)
    finally:
        supervisor.stop_all()
    assert sleeper.proc.poll() is not None


def test_demo_catalog_names_every_synthetic_item_once(tmp_path: Path) -> None:
    from serving.catalog import load

    path = tmp_path / "catalog.jsonl"
    demo.write_catalog(path)
    catalog = load(path)
    assert len(catalog) == demo.SYNTHETIC_ITEMS
    titles = [entry.title for entry in catalog.entries.values()]
    assert len(set(titles)) == len(titles)
    assert catalog.tags("item-9") == (demo.GENRES[9 % demo.CLUSTERS],)


def test_live_events_are_valid_watches_of_the_synthetic_items() -> None:
    from schemas.events import WatchEvent
    from schemas.validator import validate

    live = demo.LiveEvents("http://127.0.0.1:1/events")
    events = [live.next_event() for _ in range(200)]
    for event in events:
        assert isinstance(validate(json.dumps(event)), WatchEvent), event
        assert 0 <= int(event["item_id"].removeprefix("item-")) < demo.SYNTHETIC_ITEMS
    assert len({e["event_id"] for e in events}) == len(events)
    assert {e["user_id"] for e in events} == set(demo.VISITORS)


def test_the_demo_learns_from_the_stream_and_a_retrain_against_it_is_gated_on_its_model(
    tmp_path: Path,
) -> None:
    """Issue 26, items 1 and 2: the demo's model was trained from a file that never passed
    through the stream, so a retrain against the running demo read a changelog of ~100
    events; and ``freshrec stack env`` left out the model store, so that retrain published
    into ./var/models, gated against popularity. Now the demo's first model is made by
    ``freshrec retrain`` from the worker's changelog, and a retrain run with the settings
    ``stack env`` prints is gated against the model the worker serves, publishes through
    the gate, and the worker adopts the new version."""
    state_dir = tmp_path / "demo"
    ports = {"FRESHREC_API_PORT": str(free_port()), "FRESHREC_WORKER_WEB_PORT": str(free_port())}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}, **ports}
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli",
                "demo",
                "--state-dir",
                str(state_dir),
                "--no-live-events",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:

        def started() -> bool:
            assert proc.poll() is None, log.read_text()
            return "worker and API are running" in log.read_text()

        wait_until(started, 400, "the demo's first personal list")
        shown = log.read_text()
        assert '"source": "personal"' in shown
        printed = subprocess.run(
            [sys.executable, "-m", "cli", "stack", "env", "--state-dir", str(state_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        stack_env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in printed.splitlines()
            if line.startswith("export ")
        )
        assert stack_env["FRESHREC_MODEL_STORE"] == str((state_dir / "models").resolve())
        versions = subprocess.run(
            [sys.executable, "-m", "cli", "models", "list", "--json"],
            env={**env, **stack_env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
        first = json.loads(versions[-1])
        assert first["current"] and first["snapshot"]["source"] == "changelog"
        assert sum(first["snapshot"]["end_offsets"].values()) >= 2000  # the history's users
        retrain = subprocess.run(
            [sys.executable, "-m", "cli", "retrain", "--tune-budget-s", "5"],
            env={**env, **stack_env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        summary = json.loads(retrain.stdout.splitlines()[-1])
        assert summary["baseline_kind"] == "current", summary
        assert summary["baseline_version"] == first["version"]
        assert retrain.returncode == 0, retrain.stderr  # published through the gate
        readyz = f"http://127.0.0.1:{ports['FRESHREC_API_PORT']}/readyz"

        def adopted() -> bool:
            with urllib.request.urlopen(readyz, timeout=5) as response:
                return json.loads(response.read())["model_version"] == summary["version"]

        wait_until(adopted, 120, "the worker to adopt the retrained model")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    assert stack.running(state_dir) is None
