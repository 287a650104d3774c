"""Fixtures for the worker's integration tests: fast group joins, a worker process per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from freshrec.settings import Settings
from freshrec.stack import free_port
from tests.streams.worker import WorkerProcess


@pytest.fixture
def worker_settings(settings: Settings) -> Settings:
    """The test's settings, tuned so that a worker joins, commits and polls within a second.

    Group joins on the test broker take about half the session timeout, and a
    killed worker holds its partitions for a whole one, so both are short here.
    """
    return settings.replace(
        worker_web_port=free_port(),
        broker_session_timeout_s=2.0,
        broker_heartbeat_interval_s=0.3,
        broker_commit_interval_s=0.5,
        model_poll_interval_s=0.3,
        batch_size=500,
        batch_max_wait_s=0.05,
    )


@pytest.fixture
def start_worker(
    worker_settings: Settings, topics: list[str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """A factory of worker processes (same settings); every one is stopped at the end."""
    started: list[WorkerProcess] = []

    def start(settings: Settings | None = None) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(settings or worker_settings, log).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
