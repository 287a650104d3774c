"""The API's Redis client: explicit timeouts, a retry policy, a bounded pool, and a hard deadline.

redis-py's defaults differ between versions (and its asyncio client does not
retry connection errors unless told to), so every knob is set here from
:class:`~freshrec.settings.Settings`:

* connect and socket (read/write) timeouts, so a dead or hung Redis fails fast;
* ``redis_retries`` retries of a command on ``ConnectionError``/``TimeoutError``
  with full-jitter exponential backoff (redis-py's own ``Retry``, which
  reconnects between attempts);
* a :class:`~redis.asyncio.BlockingConnectionPool` of at most
  ``api_redis_max_connections``: under a Redis slowdown, requests queue for a
  connection (up to the connect timeout) instead of opening thousands;
* hiredis parses replies when installed (a dependency of ``redis[hiredis]``).

:func:`read_deadline_s` adds those bounds up; no Redis read waits longer than
that, whatever happens on the wire (a request makes one read, two when the
user has no list and the cached fallback has expired).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from freshrec.settings import Settings


def backoff_delays(settings: Settings) -> list[float]:
    """The longest wait before each retry (redis-py doubles ``base`` per failure, up to ``cap``)."""
    return [
        min(settings.retry_backoff_cap_s, settings.retry_backoff_base_s * 2**failures)
        for failures in range(1, settings.redis_retries + 1)
    ]


def read_deadline_s(settings: Settings) -> float:
    """The longest one read may take: pool wait, every attempt, every backoff."""
    attempts = settings.redis_retries + 1
    per_attempt = settings.redis_connect_timeout_s + settings.redis_socket_timeout_s
    pool_wait = settings.redis_connect_timeout_s
    return pool_wait + attempts * per_attempt + sum(backoff_delays(settings))


def make_redis(settings: Settings) -> aioredis.Redis:
    """An asyncio client for ``settings.redis_url`` that owns its pool; connects lazily."""
    retry = Retry(
        ExponentialWithJitterBackoff(
            cap=settings.retry_backoff_cap_s, base=settings.retry_backoff_base_s
        ),
        settings.redis_retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.api_redis_max_connections,
        timeout=settings.redis_connect_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        retry=retry,
        client_name="freshrec-api",
    )
    return aioredis.Redis.from_pool(pool)
