"""redis-py's per-command retry, built from :class:`~freshrec.settings.Settings` in one place.

Every Redis client freshrec opens (the worker's sink, the API's store) retries
one command itself, ``redis_retries`` times, on a connection error or timeout,
reconnecting between attempts: that rides over a dropped connection or a
Redis restart without the caller noticing. Longer outages are the caller's
business (the worker's :class:`~freshrec.retry.RetryPolicy`, the API's 503).

Both clients build that retry here, so they wait alike, and so that
:func:`backoff_delays` describes the waits of both: the API adds them into the
longest time one read may take (``serving.redis_client.read_deadline_s``).
The backoff is freshrec's one schedule,
:class:`~freshrec.backoff.ExponentialJitterBackoff` (full jitter: uniform
between 0 and an exponentially growing ceiling), the same the worker's
:class:`~freshrec.retry.RetryPolicy` waits by; it spreads the reconnects of many
processes that lost the same Redis instead of sending them back in lockstep.
"""

from __future__ import annotations

from redis.asyncio.retry import Retry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from freshrec.backoff import ExponentialJitterBackoff
from freshrec.settings import Settings


def redis_retry(settings: Settings) -> Retry:
    """The retry of one command: ``redis_retries`` retries with full-jitter backoff.

    Only connection errors and timeouts are retried; an error reply from the
    server (a wrong type, a script error) would fail again, and is raised at once.
    """
    return Retry(
        ExponentialJitterBackoff.from_settings(settings),
        settings.redis_retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )


def backoff_delays(settings: Settings) -> list[float]:
    """The longest wait before each retry of :func:`redis_retry`, first retry first.

    redis-py counts failures from 1, as the schedule does, so these are the
    schedule's own ceilings: ``min(cap, base * 2**(failures-1))``.
    """
    backoff = ExponentialJitterBackoff.from_settings(settings)
    return [backoff.ceiling(failures) for failures in range(1, settings.redis_retries + 1)]
