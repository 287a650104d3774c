"""The one factory of freshrec's Redis clients (the worker's sink and the API's store).

redis-py's defaults differ between versions (and its asyncio client does not
retry connection errors unless told to), so every knob is set here from
:class:`~freshrec.settings.Settings`, for both sides alike:

* connect and socket (read/write) timeouts, so a dead or hung Redis fails fast;
* the per-command retry of :func:`freshrec.redis_retry.redis_retry`, which
  reconnects between attempts;
* a name (``CLIENT SETNAME``), so ``CLIENT LIST`` on the server tells the
  worker's connections from the API's;
* with ``max_connections``, a :class:`~redis.asyncio.BlockingConnectionPool`:
  under a Redis slowdown callers queue for a connection (up to the connect
  timeout) instead of opening thousands.

hiredis parses replies when installed (a dependency of ``redis[hiredis]``).
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis

from freshrec.redis_retry import redis_retry
from freshrec.settings import Settings


def redis_client(settings: Settings, name: str, max_connections: int | None = None) -> Redis:
    """An asyncio client for ``settings.redis_url`` that owns its pool; connects lazily.

    ``max_connections=None`` leaves the pool unbounded (the worker holds one or
    two connections); a number bounds it and makes callers wait for a free one.
    """
    options = {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "retry": redis_retry(settings),
        "client_name": name,
    }
    if max_connections is None:
        pool = ConnectionPool.from_url(settings.redis_url, **options)
    else:
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=max_connections,
            timeout=settings.redis_connect_timeout_s,
            **options,
        )
    return Redis.from_pool(pool)
