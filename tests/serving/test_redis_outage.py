"""Redis killed or hung mid-test: a 503 with Retry-After within the bounded deadline, then recovery.

Each test runs its own redis-server (so the session's one is not disturbed)
and short timeouts, so the bound is small and the test quick.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from freshrec.settings import Settings
from freshrec.stack import RedisProcess
from serving.metrics import REDIS_ERRORS
from serving.redis_client import read_deadline_s
from tests.serving.conftest import ApiClient, store_list

pytestmark = pytest.mark.integration

#: Short Redis timeouts for these tests: deadline = 0.2 + 2 * 0.4 + at most 0.01 of backoff.
FAST = {
    "redis_connect_timeout_s": 0.2,
    "redis_socket_timeout_s": 0.2,
    "redis_retries": 1,
    "retry_backoff_base_s": 0.01,
    "retry_backoff_cap_s": 0.05,
}
#: Scheduling slack on a busy 2-core machine, on top of the deadline.
SLACK_S = 0.5


async def test_redis_killed_gives_503_within_the_deadline_then_recovers(
    api_client: ApiClient, own_redis: RedisProcess, settings: Settings
) -> None:
    changes = {"redis_url": own_redis.url, **FAST}
    deadline = read_deadline_s(settings.replace(**changes))
    store_list(own_redis, settings, "alice", ["a"])
    unavailable_before = REDIS_ERRORS.labels("unavailable")._value.get()
    async with api_client(**changes) as client:
        assert (await client.get("/recs/alice")).status == 200

        own_redis.kill()
        started = time.monotonic()
        resp = await client.get("/recs/alice")
        elapsed = time.monotonic() - started
        text = await resp.text()
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert elapsed < deadline + SLACK_S
        assert '"code":"unavailable"' in text
        assert "Traceback" not in text
        assert REDIS_ERRORS.labels("unavailable")._value.get() > unavailable_before
        assert (await client.get("/healthz")).status == 200

        own_redis.start()
        store_list(own_redis, settings, "alice", ["b"])
        resp = await client.get("/recs/alice")
        assert resp.status == 200
        assert (await resp.json())["items"] == [{"item": "b", "score": 1.0}]


async def test_hung_redis_gives_503_within_the_deadline_then_recovers(
    api_client: ApiClient, own_redis: RedisProcess, settings: Settings
) -> None:
    changes = {"redis_url": own_redis.url, **FAST}
    deadline = read_deadline_s(settings.replace(**changes))
    store_list(own_redis, settings, "alice", ["a"])
    async with api_client(**changes) as client:
        assert (await client.get("/recs/alice")).status == 200

        assert own_redis.pid is not None
        os.kill(own_redis.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            resp = await client.get("/recs/alice")
            elapsed = time.monotonic() - started
            assert resp.status == 503
            assert "Retry-After" in resp.headers
            # It did wait for Redis (a socket timeout at least), and no longer than the bound.
            assert FAST["redis_socket_timeout_s"] <= elapsed < deadline + SLACK_S
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)

        resp = await client.get("/recs/alice")
        assert resp.status == 200
        assert (await resp.json())["source"] == "personal"


def test_deadline_adds_up_every_bound(settings: Settings) -> None:
    s = settings.replace(**FAST)
    # pool wait 0.2 + 2 attempts * (0.2 connect + 0.2 read) + one backoff of at most the base.
    assert read_deadline_s(s) == pytest.approx(0.2 + 2 * 0.4 + 0.01)
