"""The API's Redis client: explicit timeouts, a retry policy, a bounded pool, and a hard deadline.

redis-py's defaults differ between versions (and its asyncio client does not
retry connection errors unless told to), so every knob is set here from
:class:`~freshrec.settings.Settings`:

* connect and socket (read/write) timeouts, so a dead or hung Redis fails fast;
* ``redis_retries`` retries of a command on ``ConnectionError``/``TimeoutError``
  with full-jitter exponential backoff (:func:`freshrec.redis_retry.redis_retry`,
  redis-py's own ``Retry``, which reconnects between attempts);
* a :class:`~redis.asyncio.BlockingConnectionPool` of at most
  ``api_redis_max_connections``: under a Redis slowdown, requests queue for a
  connection (up to the connect timeout) instead of opening thousands;
* hiredis parses replies when installed (a dependency of ``redis[hiredis]``).

:func:`read_deadline_s` adds those bounds up (the backoff's from
:func:`freshrec.redis_retry.backoff_delays`); no Redis read waits longer than
that, whatever happens on the wire (a request makes one read, two when the
user has no list and the cached fallback has expired).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from freshrec.redis_retry import backoff_delays, redis_retry
from freshrec.settings import Settings


def read_deadline_s(settings: Settings) -> float:
    """The longest one read may take: pool wait, every attempt, every backoff."""
    attempts = settings.redis_retries + 1
    per_attempt = settings.redis_connect_timeout_s + settings.redis_socket_timeout_s
    pool_wait = settings.redis_connect_timeout_s
    return pool_wait + attempts * per_attempt + sum(backoff_delays(settings))


def make_redis(settings: Settings) -> aioredis.Redis:
    """An asyncio client for ``settings.redis_url`` that owns its pool; connects lazily."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.api_redis_max_connections,
        timeout=settings.redis_connect_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        retry=redis_retry(settings),
        client_name="freshrec-api",
    )
    return aioredis.Redis.from_pool(pool)
