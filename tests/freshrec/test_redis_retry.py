"""The per-command Redis retry: its count and backoff follow settings, and both clients carry it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from freshrec.redis_client import redis_client
from freshrec.redis_retry import backoff_delays, redis_retry
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from serving.redis_client import make_redis, read_deadline_s

#: Settings whose backoff reaches its cap within the retries.
CAPPED = Settings(redis_retries=4, retry_backoff_base_s=0.05, retry_backoff_cap_s=0.3)


def run_failing(
    settings: Settings, error: Exception, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[float]]:
    """Run one always-failing command under ``redis_retry(settings)``.

    Returns the attempts made and the waits between them; the waits are
    recorded instead of slept, so the test takes no time.
    """
    waits: list[float] = []
    attempts = 0

    async def record(delay: float) -> None:
        waits.append(delay)

    async def command() -> None:
        nonlocal attempts
        attempts += 1
        raise error

    async def on_failure(_: Exception) -> None:
        return None

    monkeypatch.setattr("redis.asyncio.retry.sleep", record)
    with pytest.raises(type(error)):
        asyncio.run(redis_retry(settings).call_with_retry(command, on_failure))
    return attempts, waits


@pytest.mark.parametrize("retries", [0, 1, 3])
@pytest.mark.parametrize("error", [RedisConnectionError("down"), RedisTimeoutError("slow")])
def test_connection_errors_and_timeouts_are_retried_redis_retries_times(
    retries: int, error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts, waits = run_failing(Settings(redis_retries=retries), error, monkeypatch)
    assert attempts == retries + 1
    assert len(waits) == retries


def test_an_error_reply_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server error (wrong type, script error) would fail again: raised at the first attempt."""
    attempts, waits = run_failing(CAPPED, ResponseError("WRONGTYPE"), monkeypatch)
    assert (attempts, waits) == (1, [])


def test_backoff_ceilings_double_from_the_base_up_to_the_cap() -> None:
    assert backoff_delays(CAPPED) == pytest.approx([0.05, 0.1, 0.2, 0.3])
    assert backoff_delays(Settings(redis_retries=0)) == []


def test_waits_are_full_jitter_below_each_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uniform in [0, ceiling]: never above the ceiling the API's deadline counts on, and
    spread over the whole range (so many processes do not reconnect in lockstep)."""
    ceilings = backoff_delays(CAPPED)
    drawn: list[list[float]] = [[] for _ in ceilings]
    for _ in range(300):
        _, waits = run_failing(CAPPED, RedisConnectionError("down"), monkeypatch)
        for nth, wait in enumerate(waits):
            drawn[nth].append(wait)
    for ceiling, waits in zip(ceilings, drawn, strict=True):
        assert all(0 <= w <= ceiling for w in waits)
        assert min(waits) < 0.1 * ceiling and max(waits) > 0.9 * ceiling


def test_the_worker_policy_and_the_redis_clients_wait_by_one_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Regression: with the same settings the worker's RetryPolicy waited up to
    ``base * 2**(n-1)`` before retry n and redis-py's Retry up to ``base * 2**n``."""
    policy = RetryPolicy.from_settings(CAPPED)
    assert redis_retry(CAPPED) == Retry(policy.backoff, CAPPED.redis_retries)
    redis_waits: list[list[float]] = [[] for _ in range(CAPPED.redis_retries)]
    for _ in range(300):
        for nth, wait in enumerate(run_failing(CAPPED, RedisConnectionError("x"), monkeypatch)[1]):
            redis_waits[nth].append(wait)
    for nth, waits in enumerate(redis_waits):
        policy_waits = [policy.backoff.compute(nth + 1) for _ in range(300)]
        ceiling = backoff_delays(CAPPED)[nth]
        for drawn in (waits, policy_waits):
            assert 0.9 * ceiling < max(drawn) <= ceiling


def test_the_api_read_deadline_counts_the_longest_backoffs() -> None:
    s = CAPPED.replace(redis_connect_timeout_s=0.2, redis_socket_timeout_s=0.3)
    # pool wait + 5 attempts of (connect + socket timeout) + 0.05 + 0.1 + 0.2 + 0.3
    assert read_deadline_s(s) == pytest.approx(0.2 + 5 * 0.5 + 0.65)


def worker_client(settings: Settings) -> Redis:
    """The client the worker's sink opens (streams.sink.RedisSink), on one server."""
    client = redis_client(settings, "freshrec-worker")
    assert isinstance(client, Redis)
    return client


@pytest.mark.parametrize("make_client", [worker_client, make_redis], ids=["sink", "api"])
def test_the_worker_sink_and_the_api_connect_with_the_shared_retry(
    make_client: Callable[[Settings], Any],
) -> None:
    settings = CAPPED.replace(redis_retries=5)

    async def connection_retry() -> Any:
        client = make_client(settings)
        try:
            # what each new connection of the client's pool retries with (nothing is dialled)
            return client.connection_pool.make_connection().retry
        finally:
            await client.aclose()

    retry = asyncio.run(connection_retry())
    assert retry == redis_retry(settings)
    assert retry.get_retries() == 5


def test_a_cluster_client_retries_by_the_same_policy() -> None:
    """On a Redis Cluster the retry is the cluster client's (it reads the slot map again
    between attempts): the same schedule and count as on one server."""
    from redis.asyncio.cluster import RedisCluster

    settings = CAPPED.replace(
        redis_retries=4, redis_cluster=True, redis_url="redis://127.0.0.1:7000"
    )

    async def cluster_retry() -> Any:
        client = redis_client(settings, "freshrec-worker")  # lazy: nothing is dialled
        assert isinstance(client, RedisCluster)
        try:
            return client.retry
        finally:
            await client.aclose()

    retry = asyncio.run(cluster_retry())
    assert retry == redis_retry(settings) and retry.get_retries() == 4
