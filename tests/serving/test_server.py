"""``freshrec api --workers 2`` as a real process: graceful SIGTERM, merged metrics, failures.

Requests are held "in flight" deterministically by freezing the test's own
redis-server (SIGSTOP): every request then waits inside the API for Redis, and
the in-progress gauge on ``/metrics`` (which needs no Redis) says how many.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from freshrec.settings import Settings
from freshrec.stack import LOOPBACK, RedisProcess, free_port, wait_until
from tests.serving.conftest import store_list

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Long Redis timeouts so that requests wait on a frozen Redis instead of failing.
PATIENT = {"redis_connect_timeout_s": 20.0, "redis_socket_timeout_s": 20.0}
IN_FLIGHT = 8
START_TIMEOUT_S = 60.0


class ApiProcess:
    """``python -m cli api`` with the test's settings, its output in a log file."""

    def __init__(self, settings: Settings, log: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
        env.update(settings.as_env())
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    "api",
                    "--workers",
                    str(workers),
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def get(self, path: str, timeout: float = 60.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def wait_ready(self) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"api exited early:\n{self.log.read_text()}")
            return self.get("/healthz", timeout=2)[0] == 200

        wait_until(up, START_TIMEOUT_S, "freshrec api")

    def metric(self, name: str, labels: str = "") -> float:
        text = self.get("/metrics", timeout=5)[1].decode()
        pattern = re.escape(name + (f"{{{labels}}}" if labels else "")) + r" ([0-9.e+]+)"
        found = re.search(rf"^{pattern}$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def refuses_connections(self) -> bool:
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def api_process(settings: Settings, tmp_path: Path) -> Iterator[type[ApiProcess]]:
    started: list[ApiProcess] = []

    class Tracked(ApiProcess):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for api in started:
        api.stop()


def test_sigterm_lets_in_flight_requests_finish(
    api_process: type[ApiProcess], own_redis: RedisProcess, settings: Settings, tmp_path: Path
) -> None:
    store_list(own_redis, settings, "alice", ["a", "b"])
    api = api_process(settings.replace(redis_url=own_redis.url, **PATIENT), tmp_path / "api.log")
    api.wait_ready()
    assert api.get("/recs/alice")[0] == 200
    assert own_redis.pid is not None

    os.kill(own_redis.pid, signal.SIGSTOP)
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        try:
            pending: list[Future[tuple[int, bytes]]] = [
                pool.submit(api.get, "/recs/alice") for _ in range(IN_FLIGHT)
            ]
            # The scrape itself is in progress too, hence the + 1.
            wait_until(
                lambda: api.metric("freshrec_api_requests_in_progress") == IN_FLIGHT + 1,
                30,
                "requests waiting on the frozen Redis",
            )
            api.proc.send_signal(signal.SIGTERM)
            wait_until(api.refuses_connections, 30, "workers to stop accepting")
            assert all(not f.done() for f in pending)
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        results = [f.result(timeout=60) for f in pending]

    assert [status for status, _ in results] == [200] * IN_FLIGHT
    assert all(b'"source":"personal"' in body for _, body in results)
    assert api.proc.wait(60) == 0, api.log.read_text()


def test_metrics_add_up_over_all_workers(
    api_process: type[ApiProcess], settings: Settings, tmp_path: Path
) -> None:
    api = api_process(settings, tmp_path / "api.log")
    api.wait_ready()
    requests = 40
    for n in range(requests):  # a new connection each: the kernel spreads them over workers
        assert api.get(f"/recs/user{n}")[0] == 200
    total = api.metric("freshrec_api_requests_total", 'route="/recs/{user}",status="200"')
    assert total == requests
    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(60) == 0


def test_a_dead_worker_stops_the_whole_unit(
    api_process: type[ApiProcess], settings: Settings, tmp_path: Path
) -> None:
    api = api_process(settings, tmp_path / "api.log")
    api.wait_ready()
    children = Path(f"/proc/{api.proc.pid}/task/{api.proc.pid}/children").read_text().split()
    workers = [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    assert api.proc.wait(60) == 1
    assert "stopping the others" in api.log.read_text()


def test_a_taken_port_is_a_clear_error(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
        done = subprocess.run(
            [sys.executable, "-m", "cli", "api", "--port", str(port)],
            env={**env, **settings.as_env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert f"cannot listen on {LOOPBACK}:{port}" in done.stderr


def test_a_second_api_on_the_same_port_fails_at_once(
    api_process: type[ApiProcess], settings: Settings, tmp_path: Path
) -> None:
    """Issue 26, item 3: a second ``freshrec api`` on the port of a running one joined it through
    SO_REUSEPORT and took a share of its requests; it must fail in one line, exit 1."""
    first = api_process(settings, tmp_path / "api.log", workers=2)
    first.wait_ready()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHREC_")}
    for workers in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "cli", "api", "--port", str(first.port), "--workers", workers],
            env={**env, **settings.as_env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert f"cannot listen on {LOOPBACK}:{first.port}" in done.stderr
    assert first.get("/healthz")[0] == 200


def test_one_worker_serves_in_process_and_stops_on_sigterm(
    api_process: type[ApiProcess], settings: Settings, tmp_path: Path
) -> None:
    api = api_process(settings, tmp_path / "api.log", workers=1)
    api.wait_ready()
    status, body = api.get("/recs/alice")
    assert (status, b'"source":"popular"' in body) == (200, True)
    assert api.metric("freshrec_api_requests_total", 'route="/recs/{user}",status="200"') == 1
    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(60) == 0
