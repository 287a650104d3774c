"""A real worker and a real API on a real Redis Cluster, through a primary's SIGKILL.

``freshrec worker`` writes the lists of users spread over every primary,
``freshrec api`` serves each of them; then one primary is killed with SIGKILL
while events keep coming, its replica is promoted, and afterwards every user's
list holds every event and the API serves them all: no list lost. The batch
pipelines wait for one replica (``FRESHREC_REDIS_WAIT_REPLICAS=1``), so what
the killed primary had acknowledged was already on the replica that took over.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.cluster

from freshrec.redis_client import sync_redis_client
from freshrec.settings import Settings
from freshrec.stack import RedisClusterProcesses, wait_until
from schemas.recs import user_key
from tests.api_process import api_process, get_json, quick_processes
from tests.streams.worker import (
    BASE_TS,
    WorkerProcess,
    publish,
    publish_model,
    read_list,
    synthetic,
    watch,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USERS = [f"viewer-{i}" for i in range(40)]


@pytest.fixture
def e2e_settings(cluster_settings: Settings, topics: list[str]) -> Settings:
    return quick_processes(cluster_settings).replace(
        batch_max_wait_s=0.05,
    )


@pytest.fixture
def api(e2e_settings: Settings, tmp_path: Path) -> Iterator[str]:
    with api_process(e2e_settings, tmp_path / "api.log") as base:
        yield base


def stored_ts(client: redis.cluster.RedisCluster, settings: Settings) -> dict[str, int | None]:
    """Each user's newest event time in the list the cluster holds (None: no list)."""
    out: dict[str, int | None] = {}
    for user in USERS:
        recs = read_list(client, settings, user)
        out[user] = None if recs is None else recs.updated_at
    return out


def served_ts(api: str) -> dict[str, object]:
    """Each user's ``updated_at`` as the API serves it (the status when not 200)."""
    out: dict[str, object] = {}
    for user in USERS:
        status, body = get_json(f"{api}/recs/{user}?k=5")
        out[user] = body["updated_at"] if status == 200 and body["source"] == "personal" else status
    return out


def test_lists_survive_a_primary_killed_mid_run(
    e2e_settings: Settings, api: str, redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    s = e2e_settings
    client = sync_redis_client(s, "test-reader")
    assert isinstance(client, redis.cluster.RedisCluster)
    keys = [user_key(s.key_prefix, u) for u in USERS]
    owners = {client.get_node_from_key(k).port for k in keys}
    assert len(owners) == 3, "the users' lists should be spread over every primary"

    publish_model(s, synthetic())
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        first = [watch(f"a-{u}", u, "item-3", BASE_TS + 1) for u in USERS]
        publish(s, first)
        want = {u: BASE_TS + 1 for u in USERS}
        worker.wait_for(lambda: stored_ts(client, s) == want, 60, "every list in the cluster")
        wait_until(lambda: served_ts(api) == want, 30, "the API serving every list")

        victim = next(n for n in redis_cluster.primaries() if n.port in owners)
        victim.kill()  # SIGKILL: no shutdown, no goodbye to the cluster
        # events keep coming while its slots have no primary
        for step in range(2, 5):
            publish(s, [watch(f"{step}-{u}", u, f"item-{step + 3}", BASE_TS + step) for u in USERS])
        want = {u: BASE_TS + 4 for u in USERS}
        wait_until(redis_cluster.healthy, 30, "the replica promoted (cluster_state ok)")
        assert victim.port not in {n.port for n in redis_cluster.primaries()}
        worker.wait_for(lambda: stored_ts(client, s) == want, 60, "every list after the failover")
        wait_until(lambda: served_ts(api) == want, 30, "the API serving every list again")
        assert worker.alive, worker.log_tail()
    finally:
        worker.kill()  # done with it: an orderly stop costs a second or two
        client.close()
        # the killed node rejoins as a replica, so the next test finds a whole cluster
        if dead := [n for n in redis_cluster.nodes if n not in redis_cluster.alive()]:
            for node in dead:
                node.start()
            wait_until(redis_cluster.healthy, 30, "the killed node back as a replica")
