"""Reads the lists the worker writes (``schemas.recs``): one ``HGET`` of ``data`` per request.

The ``HGET``s of concurrent requests travel together (:mod:`serving.coalesce`).

This is the edge where redis-py's exceptions become freshrec's: an unreachable
or timed-out Redis, or a read that passed its deadline
(:func:`serving.redis_client.read_deadline_s`), is a
:class:`~freshrec.errors.TransientError` (the API answers 503); a key of the
wrong type is a :class:`CorruptList` (the API falls back, as for a list that
does not parse, and counts it there).

The popular fallback is the same for every user, so each process keeps it in
memory for ``api_popular_cache_s`` seconds: a user without a list then also
costs one round trip, and the fallback is at most that stale. Its absence is
never kept: right after the first worker writes it, the next request sees it.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError, ResponseError

from freshrec.errors import TransientError
from freshrec.redis_client import TRANSIENT_ERRORS, AsyncRedis
from freshrec.settings import Settings
from schemas.recs import DATA_FIELD, popular_key, user_key
from serving.coalesce import HgetCoalescer
from serving.metrics import REDIS_ERRORS


class CorruptList(Exception):
    """A stored list that is not what ``schemas.recs.encode`` writes."""


class RecsStore:
    """The lists of one key prefix, read through one client."""

    def __init__(self, client: AsyncRedis, settings: Settings, deadline_s: float) -> None:
        self.deadline_s = deadline_s
        self.reader = HgetCoalescer(client, DATA_FIELD, deadline_s)
        self.prefix = settings.key_prefix
        self.popular_cache_s = settings.api_popular_cache_s
        self._popular: bytes | None = None
        self._popular_expires = float("-inf")

    async def user_list(self, user: str) -> bytes | None:
        """The ``data`` field of the user's list, or None when the user has none."""
        return await self._hget(user_key(self.prefix, user))

    async def popular(self, *, fresh: bool = False) -> bytes | None:
        """The ``data`` field of the popular list, from memory when it is recent enough."""
        now = asyncio.get_running_loop().time()
        if fresh or now >= self._popular_expires:
            self._popular = await self._hget(popular_key(self.prefix))
            # a missing list is asked for again at the next miss, not kept for the period
            self._popular_expires = now + self.popular_cache_s if self._popular else now
        return self._popular

    async def _hget(self, key: str) -> bytes | None:
        try:
            value = await self.reader.hget(key)
        except TimeoutError as exc:
            REDIS_ERRORS.labels("deadline").inc()
            raise TransientError(f"Redis did not answer within {self.deadline_s:.2f}s") from exc
        except TRANSIENT_ERRORS as exc:  # down, or a cluster failing a node over
            REDIS_ERRORS.labels("unavailable").inc()
            raise TransientError(f"Redis cannot be reached: {type(exc).__name__}") from exc
        except ResponseError as exc:
            if str(exc).startswith("WRONGTYPE"):
                raise CorruptList(f"{key} is not a hash") from exc
            REDIS_ERRORS.labels("error").inc()
            raise TransientError("Redis refused the read") from exc
        except RedisError as exc:
            REDIS_ERRORS.labels("error").inc()
            raise TransientError("Redis refused the read") from exc
        return value
