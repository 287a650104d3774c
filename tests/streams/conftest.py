"""Fixtures for the worker's integration tests: fast group joins, a worker process per test,
a broker of the test's own."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from freshrec.settings import Settings
from freshrec.stack import BrokerProcess
from streams.topics import ensure_topics
from tests.api_process import quick_processes
from tests.streams.worker import (
    StartWorker,
    WorkerProcess,
    lists_caught_up,
    publish,
    publish_model,
    synthetic,
)


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """The test's settings, tuned so that a worker joins, commits and polls within a second.

    Group joins on the test broker take about half the session timeout, and a
    killed worker holds its partitions for a whole one, so both are short here.
    """
    return quick_processes(settings).replace(batch_size=500, batch_max_wait_s=0.05)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def start_worker(
    worker_settings: Settings, topics: list[str], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., WorkerProcess]]:
    """A factory of worker processes (same settings); every one is killed at the end.

    When the test failed, the end of every worker's log is printed, alive or not:
    a wait that timed out on one worker often has its cause in another's log.
    """
    started: list[WorkerProcess] = []

    def start(settings: Settings | None = None) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(settings or worker_settings, log).start()
        started.append(worker)
        return worker

    yield start
    exited = {id(w): w.proc.poll() if w.proc is not None else None for w in started}
    for worker in started:
        # SIGKILL: the test is over, and an orderly stop (about a second a worker) is what
        # tests that stop a worker on purpose check; nothing of this test's names is reused
        worker.kill()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for worker in started:
            state = "running" if exited[id(worker)] is None else f"exited {exited[id(worker)]}"
            print(f"\n--- {worker.log_path.name} ({state} at the end) ---\n{worker.log_tail(80)}")


@pytest.fixture
def worker_with_lists(
    start_worker: StartWorker, redis_client: redis.Redis
) -> Callable[..., WorkerProcess]:
    """A factory of a worker that holds lists: a model published, the worker started with
    ``settings``, ``events`` published and every one of their users' lists waited for (the
    start of most fault tests)."""

    def start(settings: Settings, events: Sequence[dict], timeout_s: float = 30.0) -> WorkerProcess:
        publish_model(settings, synthetic())
        worker = start_worker(settings)
        publish(settings, events)
        worker.wait_for(
            lambda: lists_caught_up(settings, redis_client, events), timeout_s, "the first lists"
        )
        return worker

    return start


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A broker for this test alone, to kill and start again (empty) on the same port."""
    broker = BrokerProcess(log_path=tmp_path / "own-broker.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def settings_on(worker_settings: Settings) -> Callable[..., Settings]:
    """A factory of the worker settings on a broker of the test's own (``bootstrap_servers``,
    with ``changes``), that broker's topics made and a model published: ready for a worker."""

    def on(bootstrap_servers: str, **changes: Any) -> Settings:
        settings = worker_settings.replace(bootstrap_servers=bootstrap_servers, **changes)
        ensure_topics(settings)
        publish_model(settings, synthetic())
        return settings

    return on
