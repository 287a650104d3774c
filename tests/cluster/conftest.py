"""A real Redis Cluster on loopback, for the tests that ask for it.

Six ``redis-server`` processes in cluster mode (three primaries, one replica
each, ``redis-cli --cluster create``), started once per session and only when
a test names the ``redis_cluster`` fixture. A node silent for 2 s is failed
over to its replica. A test that kills a node starts it again before it ends
(it rejoins as a replica), so the cluster stays whole for the next test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from freshrec.settings import Settings
from freshrec.stack import RedisClusterProcesses


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start(timeout_s=30)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_settings(settings: Settings, redis_cluster: RedisClusterProcesses) -> Settings:
    """The test's settings with the lists in the cluster, each batch waiting for a replica."""
    return settings.replace(redis_url=redis_cluster.url, redis_cluster=True, redis_wait_replicas=1)
