"""The Redis layer against a real Redis Cluster: the sink, the API's coalesced reads, the lock.

Keys of many users land on every primary, so each test crosses nodes: the
sink's one pipeline per batch is split by node, the compare-and-set script
runs on each node for its own keys, the coalesced ``HGET`` batch is answered by
several nodes, and the retrain lock lives on the primary of its slot.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
import redis.cluster

from freshrec.backoff import NoBackoff
from freshrec.errors import TransientError
from freshrec.forgets import forgets_key
from freshrec.redis_client import redis_client, sync_redis_client
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from freshrec.stack import RedisClusterProcesses, free_port, wait_until
from retrain.lock import LockedError, RetrainLock
from schemas.recs import DATA_FIELD, ORDER_FIELD, order_token, user_key
from serving.coalesce import HgetCoalescer
from serving.redis_client import read_deadline_s
from streams.lists import UserList
from streams.sink import RedisSink
from tests.cluster.migration import Migration

pytestmark = pytest.mark.integration

USERS = [f"user-{i}" for i in range(60)]


def user_list(user: str, ts: int, data: bytes) -> UserList:
    return UserList(user=user, order=order_token(ts, "v1"), data=data)


@pytest.fixture
def cluster_client(cluster_settings: Settings) -> redis.cluster.RedisCluster:
    client = sync_redis_client(cluster_settings, "test")
    assert isinstance(client, redis.cluster.RedisCluster)
    return client


def nodes_holding(client: redis.cluster.RedisCluster, keys: list[str]) -> set[str]:
    return {client.get_node_from_key(key).name for key in keys}


def test_a_batch_is_written_per_node_and_never_rolled_back(
    cluster_settings: Settings, cluster_client: redis.cluster.RedisCluster
) -> None:
    keys = [user_key(cluster_settings.key_prefix, u) for u in USERS]
    assert len(nodes_holding(cluster_client, keys)) == 3  # the batch crosses every primary

    async def scenario() -> tuple[int, int, int]:
        sink = RedisSink(cluster_settings, RetryPolicy.from_settings(cluster_settings))
        try:
            first = await sink.write([user_list(u, 10, b"new-" + u.encode()) for u in USERS])
            # an older batch (a replay, a zombie) changes nothing, on any node
            stale = await sink.write([user_list(u, 5, b"old") for u in USERS])
            # a script cache lost on every node (restarts): loaded again, then written
            cluster_client.script_flush()  # every primary
            again = await sink.write([user_list(u, 11, b"newer") for u in USERS[:30]],
                                     forget=USERS[30:])  # fmt: skip
            return first, stale, again
        finally:
            await sink.close()

    assert asyncio.run(scenario()) == (60, 0, 30)
    for user in USERS[:30]:
        stored = cluster_client.hmget(user_key(cluster_settings.key_prefix, user),
                                      [ORDER_FIELD, DATA_FIELD])  # fmt: skip
        assert stored == [order_token(11, "v1").encode(), b"newer"]
    assert not any(cluster_client.exists(key) for key in keys[30:])
    # the batch that forgot users recorded when, on its key's node (freshrec.forgets)
    assert int(cluster_client.get(forgets_key(cluster_settings.key_prefix)) or 0) > 0


def test_the_epoch_is_read_and_kept_on_a_cluster(cluster_settings: Settings) -> None:
    async def scenario() -> tuple[tuple[str, bool], tuple[str, bool]]:
        sink = RedisSink(cluster_settings, RetryPolicy.from_settings(cluster_settings))
        try:
            return await sink.epoch(), await sink.epoch()
        finally:
            await sink.close()

    (first, stored), (second, stored_again) = asyncio.run(scenario())
    assert stored and not stored_again and first == second


def test_the_coalesced_reads_of_one_loop_turn_are_answered_by_every_node(
    cluster_settings: Settings, cluster_client: redis.cluster.RedisCluster
) -> None:
    """The API's batch of HGETs (serving/coalesce.py) on a cluster: each request its own list."""
    for user in USERS:
        cluster_client.hset(user_key(cluster_settings.key_prefix, user), DATA_FIELD, user)
    cluster_client.set(user_key(cluster_settings.key_prefix, "wrong-type"), "a string")

    async def scenario() -> list[object]:
        client = redis_client(cluster_settings, "test-api", max_connections=8)
        reader = HgetCoalescer(client, DATA_FIELD, deadline_s=5.0)
        try:
            keys = [user_key(cluster_settings.key_prefix, u) for u in [*USERS, "nobody"]]
            keys.append(user_key(cluster_settings.key_prefix, "wrong-type"))
            return await asyncio.gather(*(reader.hget(k) for k in keys), return_exceptions=True)
        finally:
            await client.aclose()

    *lists, missing, wrong = asyncio.run(scenario())
    assert lists == [u.encode() for u in USERS]
    assert missing is None
    assert isinstance(wrong, redis.exceptions.ResponseError) and "WRONGTYPE" in str(wrong)


def test_one_retrain_at_a_time_on_a_cluster(cluster_settings: Settings) -> None:
    key = f"{cluster_settings.key_prefix}retrain-lock"
    first = sync_redis_client(cluster_settings, "retrain-a")
    second = sync_redis_client(cluster_settings, "retrain-b")
    with RetrainLock(first, key, ttl_s=5.0) as held:
        with pytest.raises(LockedError) as refused, RetrainLock(second, key, ttl_s=5.0):
            pass
        assert refused.value.holder == held.holder
        held.ensure_held()
    with RetrainLock(second, key, ttl_s=5.0):  # released at exit
        pass


def test_a_batch_no_replica_acknowledged_is_not_written(
    cluster_settings: Settings,
    cluster_client: redis.cluster.RedisCluster,
    redis_cluster: RedisClusterProcesses,
) -> None:
    """With FRESHREC_REDIS_WAIT_REPLICAS=1 a batch counts as written only once a replica holds
    it: a replica that stops acknowledging (SIGSTOP, as a hung host) fails the write as
    transient, so its events are not acked; once it answers again the batch goes through."""
    key = user_key(cluster_settings.key_prefix, "paused")
    primary = cluster_client.get_node_from_key(key)
    replica_port = int(cluster_client.info("replication", target_nodes=primary)["slave0"]["port"])
    (replica,) = [n for n in redis_cluster.nodes if n.port == replica_port]
    proc = replica.proc
    assert proc is not None
    once = RetryPolicy(NoBackoff(), max_attempts=1)

    async def scenario() -> tuple[int, TransientError | None, int]:
        # one client throughout: it reads the slot map before the pause (the
        # paused replica may be the node the URL names)
        sink = RedisSink(cluster_settings.replace(redis_socket_timeout_s=0.4), once)
        try:
            before = await sink.write([user_list("paused", 10, b"x")])
            proc.send_signal(signal.SIGSTOP)
            refused = None
            try:
                await sink.write([user_list("paused", 11, b"y")])
            except TransientError as exc:
                refused = exc
            finally:
                proc.send_signal(signal.SIGCONT)
            return before, refused, await sink.write([user_list("paused", 11, b"y")])
        finally:
            await sink.close()

    before, refused, after = asyncio.run(scenario())
    assert before == 1 and after == 1
    assert refused is not None and "reached 0 of 1 connected replicas" in str(refused)


def test_a_primary_that_lost_its_data_alone_changes_the_epoch(
    cluster_settings: Settings, cluster_client: redis.cluster.RedisCluster
) -> None:
    """Each primary holds a token of its own: one node restarted empty (here: flushed) while
    the others kept theirs, and the one cluster-wide key lived elsewhere, went unnoticed."""

    async def epoch() -> tuple[str, bool]:
        sink = RedisSink(cluster_settings, RetryPolicy.from_settings(cluster_settings))
        try:
            return await sink.epoch()
        finally:
            await sink.close()

    first, stored = asyncio.run(epoch())
    assert stored and len(first.split(",")) == 3  # one token per primary
    assert asyncio.run(epoch()) == (first, False)
    lost = cluster_client.get_primaries()[1]
    cluster_client.flushall(target_nodes=lost)
    after, stored = asyncio.run(epoch())
    assert stored and after != first
    # the first call stored one fresh token on every node; the two untouched ones keep it
    assert after.split(",").count(first.split(",")[0]) == 2


def test_a_cluster_no_node_of_which_answers_is_a_transient_fault(settings: Settings) -> None:
    """redis-py's cluster client raises its own RedisClusterException when no node answers
    (or the slots are not all served while a failover is under way): it escaped the sink's
    retry as an unknown error instead of a transient fault."""
    unreachable = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}", redis_cluster=True)

    async def epoch() -> None:
        sink = RedisSink(unreachable, RetryPolicy(NoBackoff(), max_attempts=2))
        try:
            await sink.epoch()
        finally:
            await sink.close()

    with pytest.raises(TransientError, match="Redis Cluster cannot be connected"):
        asyncio.run(epoch())


def test_chaos_a_killed_primary_fails_only_its_own_users_coalesced_reads(
    cluster_settings: Settings,
    cluster_client: redis.cluster.RedisCluster,
    redis_cluster: RedisClusterProcesses,
) -> None:
    """Regression (issue 28): in the seconds before a killed primary's replica took over,
    the API answered 503 to users on primaries that stayed up: their reads shared one
    cluster pipeline with the dead node's users, and redis-py fails the whole pipeline on
    one node's ConnectionError. Each node's part of a coalesced batch now fails alone."""
    keys = [user_key(cluster_settings.key_prefix, u) for u in USERS]
    for key in keys:
        cluster_client.hset(key, DATA_FIELD, key)
    victim = next(n for n in redis_cluster.primaries() if n.port in {
        cluster_client.get_node_from_key(k).port for k in keys})  # fmt: skip
    on_victim = {k for k in keys if cluster_client.get_node_from_key(k).port == victim.port}
    assert 0 < len(on_victim) < len(keys)

    async def scenario() -> tuple[int, int, int, int]:
        client = redis_client(cluster_settings, "test-api", max_connections=8)
        reader = HgetCoalescer(client, DATA_FIELD, read_deadline_s(cluster_settings))
        rounds = healthy_errors = victim_errors = served = 0
        kinds: dict[str, int] = {}
        try:
            assert await asyncio.gather(*(reader.hget(k) for k in keys)) == [
                k.encode() for k in keys
            ]
            victim.kill()
            loop = asyncio.get_running_loop()
            until = loop.time() + 8.0  # past the failover (2 s node timeout, then election)
            while loop.time() < until:
                got = await asyncio.gather(*(reader.hget(k) for k in keys), return_exceptions=True)
                rounds += 1
                for key, reply in zip(keys, got, strict=True):
                    if isinstance(reply, BaseException):
                        if key in on_victim:
                            victim_errors += 1
                        else:
                            healthy_errors += 1
                            kinds[repr(reply)[:120]] = kinds.get(repr(reply)[:120], 0) + 1
                    else:
                        served += 1
                        assert reply == key.encode()
            final = await asyncio.gather(*(reader.hget(k) for k in keys), return_exceptions=True)
            assert final == [k.encode() for k in keys], "every list served after the failover"
        finally:
            await client.aclose()
        print(f"\nerrors on healthy primaries by kind: {kinds}")
        return rounds, healthy_errors, victim_errors, served

    try:
        rounds, healthy_errors, victim_errors, served = asyncio.run(scenario())
    finally:
        for node in [n for n in redis_cluster.nodes if n not in redis_cluster.alive()]:
            node.start()
        wait_until(redis_cluster.healthy, 30, "the killed node back as a replica")
    print(
        f"\nchaos cluster-primary-killed: batches={rounds} served={served} "
        f"errors_on_healthy_primaries={healthy_errors} errors_on_the_killed_one={victim_errors}"
    )
    assert healthy_errors == 0
    assert victim_errors > 0  # the batches did reach the dead node's users meanwhile


def test_chaos_slots_held_mid_migration_keep_writes_and_reads_going(
    cluster_settings: Settings, cluster_client: redis.cluster.RedisCluster
) -> None:
    """Regression (issue 28): with slots held mid-migration the worker exited 75 about a
    second in (``ClusterError: TTL exhausted`` on EVALSHA): redis-py sent ASKING and the
    redirected command on two different pooled connections once a node had two or more
    (freshrec/redis_client.py, "ASK through a slot migration"). Every slot of the users'
    keys is held migrating to the next primary for a few seconds while concurrent batches
    write (half the users exist on the source, half are new: those are ASKed to the
    target) and coalesced reads ask; then the migration completes, and every list is the
    newest written."""
    users = [f"mig-{i}" for i in range(80)]
    keys = [user_key(cluster_settings.key_prefix, u) for u in users]
    for key in keys[::2]:
        cluster_client.hset(key, mapping={ORDER_FIELD: order_token(1, "v1"), DATA_FIELD: b"0"})
    migration = Migration(cluster_client, {cluster_client.keyslot(k) for k in keys})
    migration.hold()

    async def scenario() -> tuple[int, int, int]:
        sink = RedisSink(cluster_settings, RetryPolicy.from_settings(cluster_settings))
        client = redis_client(cluster_settings, "test-api", max_connections=8)
        reader = HgetCoalescer(client, DATA_FIELD, read_deadline_s(cluster_settings))
        written = reads = 0
        try:
            loop = asyncio.get_running_loop()
            until, ts = loop.time() + 5.0, 10
            while loop.time() < until:
                ts += 1
                batches = [users[j::4] for j in range(4)]
                got = await asyncio.gather(
                    *(sink.write([user_list(u, ts, str(ts).encode()) for u in b]) for b in batches)
                )
                written += sum(got)
                answers = await asyncio.gather(*(reader.hget(k) for k in keys))
                reads += sum(1 for a in answers if a is not None)
            return written, reads, ts
        finally:
            await sink.close()
            await client.aclose()

    try:
        written, reads, last = asyncio.run(scenario())
    finally:
        migration.complete()
    print(
        f"\nchaos cluster-slots-mid-migration: slots={len(migration.moves)} "
        f"lists_written={written} "
        f"reads_answered={reads} errors=0"
    )
    fresh = sync_redis_client(cluster_settings, "test-after")
    stale = {k: fresh.hget(k, DATA_FIELD) for k in keys}
    stale = {k: v for k, v in stale.items() if v != str(last).encode()}
    assert not stale, f"not the last write ({last}) after the migration: {stale}"
