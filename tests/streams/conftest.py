"""Fixtures for the worker's integration tests: fast group joins, a worker process per test."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from freshrec.settings import Settings
from tests.api_process import quick_processes
from tests.streams.worker import WorkerProcess


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
    """A factory of worker processes (same settings); every one is stopped at the end.

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
        worker.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for worker in started:
            state = "running" if exited[id(worker)] is None else f"exited {exited[id(worker)]}"
            print(f"\n--- {worker.log_path.name} ({state} at the end) ---\n{worker.log_tail(80)}")
