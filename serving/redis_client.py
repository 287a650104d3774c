"""The API's Redis client: explicit timeouts, a retry policy, a bounded pool, and a hard deadline.

The client is built by freshrec's one factory (:func:`freshrec.redis_client.redis_client`,
which sets the timeouts and the per-command retry of
:func:`freshrec.redis_retry.redis_retry`), with a blocking pool of at most
``api_redis_max_connections``: under a Redis slowdown, requests queue for a
connection (up to the connect timeout) instead of opening thousands.

:func:`read_deadline_s` adds those bounds up (the backoff's from
:func:`freshrec.redis_retry.backoff_delays`); no Redis read waits longer than
that, whatever happens on the wire (a request makes one read, two when the
user has no list and the cached fallback has expired).
"""

from __future__ import annotations

from freshrec.redis_client import AsyncRedis, redis_client
from freshrec.redis_retry import backoff_delays
from freshrec.settings import Settings


def read_deadline_s(settings: Settings) -> float:
    """The longest one read may take: pool wait, every attempt, every backoff."""
    attempts = settings.redis_retries + 1
    per_attempt = settings.redis_connect_timeout_s + settings.redis_socket_timeout_s
    pool_wait = settings.redis_connect_timeout_s
    return pool_wait + attempts * per_attempt + sum(backoff_delays(settings))


def make_redis(settings: Settings) -> AsyncRedis:
    """An asyncio client for ``settings.redis_url`` that owns its bounded pool; connects lazily."""
    return redis_client(
        settings, "freshrec-api", max_connections=settings.api_redis_max_connections
    )
