"""The one factory of freshrec's Redis clients: worker sink, API store, retrain lock.

redis-py's defaults differ between versions (and its asyncio client does not
retry connection errors unless told to), so every knob is set here from
:class:`~freshrec.settings.Settings`, for every side alike:

* connect and socket (read/write) timeouts, so a dead or hung Redis fails fast;
* the per-command retry of :func:`freshrec.redis_retry.redis_retry`, which
  reconnects between attempts (the asyncio clients; the retrain's blocking
  client keeps redis-py's own);
* a name (``CLIENT SETNAME``), so ``CLIENT LIST`` on the server tells the
  worker's connections from the API's;
* the password (``FRESHREC_REDIS_PASSWORD``, from a secret) and, for a
  ``rediss://`` URL, TLS with ``FRESHREC_REDIS_SSL_CA_FILE`` (or the system's CAs);
* with ``max_connections``, a :class:`~redis.asyncio.BlockingConnectionPool`:
  under a Redis slowdown callers queue for a connection (up to the connect
  timeout) instead of opening thousands.

With ``FRESHREC_REDIS_CLUSTER=true`` the URL names any node of a Redis Cluster
and both factories return redis-py's cluster clients
(:class:`~redis.asyncio.cluster.RedisCluster`, :class:`redis.cluster.RedisCluster`)
with the same options: they learn the slot map from that node, send each
command to the primary of its key's slot, follow ``MOVED``/``ASK`` and, when a
node stops answering, read the map again (a failover's promoted replica) and
retry, ``redis_retries`` times. Every command freshrec sends touches a single
key (``schemas.recs``), so none crosses slots. The cluster's pool
is per node and does not queue: past ``max_connections`` on one node a
command fails with ``MaxConnectionsError`` (a connection error, so a 503 in
the API) instead of waiting.

**ASK through a slot migration.** redis-py (8.2.0) follows an ``ASK``
redirect by sending ``ASKING`` on one pooled connection of the target node and
the command on the next one it takes; the target node honours ``ASKING`` on
its own connection only, so with two or more free connections the command was
answered ``MOVED`` back to the source, which answered ``ASK`` again, until
``ClusterError: TTL exhausted``: a slot held mid-migration ended the worker
(issue 28). Every free connection is taken from the same end of a node's
queue as released ones return to (:func:`ask_on_one_connection`): the
connection ``ASKING`` just went back on is the one the command takes, as
nothing runs between the two. A ``ClusterError`` is also transient here (the
worker retries it, the API answers 503), so any other redirect loop is retried
rather than fatal.

hiredis parses replies when installed (a dependency of ``redis[hiredis]``).
"""

from __future__ import annotations

from typing import Any

import redis
import redis.cluster
import redis.exceptions
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection

from freshrec.redis_retry import redis_retry
from freshrec.settings import Settings

#: What :func:`redis_client` returns: one server's client or a cluster's.
AsyncRedis = Redis | RedisCluster
#: What :func:`sync_redis_client` returns.
SyncRedis = redis.Redis | redis.cluster.RedisCluster
#: The faults that pass: a connection refused or dropped, a timeout, and a
#: cluster between a primary's death and its replica's promotion (``CLUSTERDOWN``,
#: ``TRYAGAIN``, and the cluster client's own errors: no node reachable, slots
#: not all served while it reads the map; its other errors are about commands
#: that span slots, which freshrec never sends). Callers retry these (the
#: worker's policy) or answer "try again" (the API's 503).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.ClusterError,
)
#: A cluster client's connections per node when the caller sets no bound (redis-py's default).
CLUSTER_MAX_CONNECTIONS = 100


def _connection_options(settings: Settings, name: str) -> dict[str, Any]:
    """What every connection of either client gets: timeouts, name, password, TLS."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "client_name": name,
    }
    if settings.redis_password:
        options["password"] = settings.redis_password
    if settings.redis_url.startswith("rediss://") and settings.redis_ssl_ca_file:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_file
    return options


_acquire_first_free = ClusterNode.acquire_connection


def _acquire_last_released(node: ClusterNode) -> Connection:
    """The free connection released last (redis-py takes the one released first)."""
    if node._free:
        connection: Connection = node._free.pop()
        return connection
    return _acquire_first_free(node)


def ask_on_one_connection() -> None:
    """Make the asyncio cluster client send ``ASKING`` and the redirected command on one
    connection (module doc, "ASK through a slot migration"); idempotent, process-wide."""
    ClusterNode.acquire_connection = _acquire_last_released  # type: ignore[method-assign,assignment]


def redis_client(settings: Settings, name: str, max_connections: int | None = None) -> AsyncRedis:
    """An asyncio client for ``settings.redis_url`` that owns its pool; connects lazily.

    ``max_connections=None`` leaves the pool unbounded (the worker holds one or
    two connections); a number bounds it and makes callers wait for a free one
    (on a cluster: bounds each node's pool, see the module doc).
    """
    options = _connection_options(settings, name) | {"retry": redis_retry(settings)}
    if settings.redis_cluster:
        ask_on_one_connection()
        return RedisCluster.from_url(
            settings.redis_url,
            max_connections=max_connections or CLUSTER_MAX_CONNECTIONS,
            **options,
        )
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


def sync_redis_client(settings: Settings, name: str) -> SyncRedis:
    """A blocking client with the same connection options, for jobs without an event loop."""
    options = _connection_options(settings, name)
    if settings.redis_cluster:
        return redis.cluster.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)
