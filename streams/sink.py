"""Write users' lists to Redis: one pipeline per batch, never replacing a newer list.

Each list is written by a small Lua script that compares the stored ``order``
token (newest event ts, then model version; see :mod:`schemas.recs`) with the
new one and writes only when the new one is not smaller. The compare and the
write are one atomic step on the server, so neither a replayed old batch nor a
zombie worker that lost its partitions can roll a user back. One script call
per user (not one call over many keys) keeps every call single-key, which a
Redis Cluster requires.

The pipeline sends ``EVALSHA`` itself: redis-py's script object asks the
server ``SCRIPT EXISTS`` before every pipeline and packs each call through
several layers. A server that lost its script cache (a restart) answers
``NOSCRIPT``; the script is then loaded and the pipeline resent (and, on a
cluster whose slot map the client has not caught up with yet, resent again
under the worker's retry policy).

On a Redis Cluster (``FRESHREC_REDIS_CLUSTER``) the same pipeline goes
through redis-py's cluster pipeline, which splits it by the node that owns
each key's slot and sends every node its part at once, on one connection
each: a batch costs one round trip per node it touches. Each node runs the
script for its own keys (scripts are loaded on every primary after a
``NOSCRIPT``, which a promoted replica answers too). A node that stops
answering mid-batch fails the pipeline; the client reads the slot map again
and the whole pipeline is resent (every call is idempotent), under the
client's retries and then the worker's policy, until the failover is done.

With ``FRESHREC_REDIS_WAIT_REPLICAS`` = n > 0 the pipeline ends, on every node
it wrote to, with ``WAIT n`` on the same connection: the batch counts as
written (and its events are acked) only once n replicas hold its lists, so a
primary killed right after answering cannot take acknowledged lists with it
(Redis replicates asynchronously). Fewer replicas within the wait than the
node has connected is a transient fault, retried like a dropped connection; a
node with fewer replicas than n (a replica promoted after its primary died) is
held to those it has, and each batch waits the whole timeout there until a
replica is back.

Each user's list carries the user's recent history (:mod:`schemas.recent`),
set in the same script call as the list, under the same compare: the history
a client sees beside a list is always the one it was made from.

The batch's online counts (:mod:`schemas.online`) and dead letters by reason
(:mod:`schemas.dead_letters`) ride in the same pipeline, one ``HINCRBY`` per
field. Unlike the lists they are not idempotent: a resend after ``NOSCRIPT``
(the server ran the rest of the pipeline) leaves them out, while one after a
dropped connection, which may or may not have run them, sends them again (the
contracts say why an occasional double count is acceptable).

Before the lists of a model version, the version's item table
(``P items:<version>`` in :mod:`schemas.recs`), which its compact lists index
into, is written by :meth:`RedisSink.write_items`: when the worker adopts the
version, and after Redis lost its data.

The sink also reads the epoch token (``P epoch`` in :mod:`schemas.recs`),
storing a fresh one when it is missing, by which the worker notices a Redis
that lost its data; on a cluster, one token per primary, since one node can
lose its data alone.

Connection faults and timeouts become :class:`~freshrec.errors.TransientError`
and are retried here with the worker's policy; the whole pipeline is resent,
which is safe because every call in it is idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster

from freshrec.errors import TransientError
from freshrec.forgets import MARK_SCRIPT, forgets_key
from freshrec.redis_client import TRANSIENT_ERRORS, AsyncRedis, redis_client
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from schemas.dead_letters import dead_letters_key
from schemas.online import OnlineCounts, decode_counts, online_key
from schemas.recent import RECENT_FIELD
from schemas.recs import (
    DATA_FIELD,
    ORDER_FIELD,
    RecList,
    encode,
    encode_items,
    epoch_key,
    items_key,
    popular_key,
    user_key,
)
from streams.lists import UserList

#: KEYS[1] the list's hash; ARGV[1] the new order token, ARGV[2] the new data,
#: ARGV[3] (optional, a user's list only) the user's recent history
#: (:mod:`schemas.recent`), written with the list so it is never older or newer.
#: Returns 1 when written, 0 when the stored list is newer. Lua compares
#: strings bytewise, and order tokens are built so that bytewise order is "newer".
_COMPARE_AND_SET = f"""
local stored = redis.call('HGET', KEYS[1], '{ORDER_FIELD}')
if stored and stored > ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], '{ORDER_FIELD}', ARGV[1], '{DATA_FIELD}', ARGV[2])
if ARGV[3] and ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], '{RECENT_FIELD}', ARGV[3])
end
return 1
"""

#: KEYS[1] the epoch key; ARGV[1] a fresh token. Returns the stored token,
#: storing ARGV[1] first when there is none: one round trip, and two workers
#: that find the key missing at once end up with the same token.
_EPOCH = """
local stored = redis.call('GET', KEYS[1])
if stored then
  return stored
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


class RedisSink:
    """Writes and deletes users' lists under the configured key prefix."""

    def __init__(
        self, settings: Settings, retry: RetryPolicy, client: AsyncRedis | None = None
    ) -> None:
        self._prefix = settings.key_prefix
        self._wait_replicas = settings.redis_wait_replicas
        # WAIT blocks the connection: keep it well inside the socket timeout
        self._wait_ms = max(1, int(settings.redis_socket_timeout_s * 1000 / 2))
        # The client's own retry rides over a dropped connection in one command;
        # longer outages are the worker's RetryPolicy's job.
        self._client = client or redis_client(settings, "freshrec-worker")
        self._retry = retry
        self._script = self._client.register_script(_COMPARE_AND_SET)
        self._sha = self._script.sha
        self._epoch = self._client.register_script(_EPOCH)

    async def write(
        self,
        lists: Sequence[UserList],
        forget: Sequence[str] = (),
        online: Mapping[tuple[str, str], OnlineCounts] | None = None,
        dead_letters: Mapping[str, int] | None = None,
    ) -> int:
        """Store ``lists`` (compare-and-set), delete the lists of ``forget`` and add the
        ``online`` counts (:mod:`schemas.online`) and the ``dead_letters`` by reason
        (:mod:`schemas.dead_letters`), in one pipeline.

        A batch that forgets anyone also raises the newest forget's time
        (:mod:`freshrec.forgets`), in the same pipeline: its markers are in the
        changelog by then, so a retrain whose snapshot was read after this time
        leaves those users out, and any version read before it is no longer served.

        Returns how many lists were written; the rest were older than what Redis holds.
        """
        counts = [
            (online_key(self._prefix, version, arm), name, amount)
            for (version, arm), c in (online or {}).items()
            for name, amount in c.increments()
        ] + [(dead_letters_key(self._prefix), r, n) for r, n in (dead_letters or {}).items()]
        if not lists and not forget and not counts:
            return 0
        payload = [(user_key(self._prefix, x.user), x.order, x.data, x.recent) for x in lists]
        deletes = [user_key(self._prefix, u) for u in forget]
        marks = [forgets_key(self._prefix)] if forget else []
        #: The counts still to send: a pipeline that ran (a NOSCRIPT answer too: the
        #: server runs every command of a pipeline) added them, and a resend must not.
        pending = counts

        async def attempt() -> int:
            try:
                try:
                    results, targets = await send()
                except redis.exceptions.NoScriptError:
                    # A server without the script: restarted, or a replica promoted since.
                    await self._client.script_load(_COMPARE_AND_SET)
                    try:
                        results, targets = await send()
                    except redis.exceptions.NoScriptError as exc:
                        # On a cluster the client may load it on the old primaries until
                        # its slot map catches up: again, under the worker's policy.
                        await self._client.script_load(_COMPARE_AND_SET)
                        raise TransientError(f"redis lacked the list script ({exc})") from exc
                waited = results[len(payload) + len(deletes) + sent + len(marks) :]
                for node, reached in zip(targets, waited, strict=True):
                    await self._check_replicas(node, int(reached))
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis write failed: {exc}") from exc
            return sum(int(r) for r in results[: len(payload)])

        sent = 0

        async def send() -> tuple[list[int], list[ClusterNode | None]]:
            nonlocal pending, sent
            keys = [key for key, *_ in payload] + deletes + [key for key, _, _ in pending] + marks
            targets = await self._wait_targets(keys)
            sent = len(pending)
            async with self._client.pipeline(transaction=False) as pipe:
                command = pipe.execute_command
                for key, order, data, recent in payload:
                    command("EVALSHA", self._sha, 1, key, order, data, recent)
                for key in deletes:  # one key per command: a cluster has them on several nodes
                    command("DEL", key)
                for key, name, amount in pending:
                    if isinstance(amount, float):
                        command("HINCRBYFLOAT", key, name, amount)
                    elif name == "k":  # the top k in force, not a total
                        command("HSET", key, name, amount)
                    else:
                        command("HINCRBY", key, name, amount)
                for key in marks:  # idempotent: a resend only raises it to a later time
                    command("EVAL", MARK_SCRIPT, 1, key, "mark")
                for node in targets:
                    if node is None:
                        command("WAIT", self._wait_replicas, self._wait_ms)
                    else:
                        command("WAIT", self._wait_replicas, self._wait_ms, target_nodes=node)
                try:
                    results: list[int] = await pipe.execute()
                except redis.exceptions.NoScriptError:
                    pending = []  # the server ran the pipeline, counts included
                    raise
                pending = []
                return results, targets

        return await self._retry.call_async(attempt)

    async def _wait_targets(self, keys: list[str]) -> list[ClusterNode | None]:
        """Where a ``WAIT`` goes after writing ``keys``: nowhere when no replica is awaited,
        the one connection (None) on one server, each node owning one of them on a cluster.

        The cluster pipeline sends a node's commands in order on one connection,
        so the ``WAIT`` there covers that node's writes.
        """
        if not self._wait_replicas:
            return []
        if not isinstance(self._client, RedisCluster):
            return [None]
        await self._client.initialize()  # the slot map (a no-op once known)
        nodes: dict[str, ClusterNode] = {}
        for key in keys:
            node = self._client.get_node_from_key(key)
            if node is not None:
                nodes[node.name] = node
        return list(nodes.values())

    async def _check_replicas(self, node: ClusterNode | None, reached: int) -> None:
        """Raise :class:`TransientError` when fewer replicas than wanted, and than the node
        has, acknowledged the write.

        A primary with fewer connected replicas than ``redis_wait_replicas`` (its
        replica died, or it is a replica just promoted) is held to those it has:
        waiting for a replica that is not there would stop the worker until one
        is, while the lists are as safe as that primary can make them.
        """
        if reached >= self._wait_replicas:
            return
        if node is None:
            info = await self._client.info("replication")
        else:
            info = await self._client.info("replication", target_nodes=node)
        connected = int(info.get("connected_slaves", 0))
        if reached < min(self._wait_replicas, connected):
            raise TransientError(
                f"redis write reached {reached} of {connected} connected replicas "
                f"within {self._wait_ms} ms"
            )

    async def stored_orders(self, users: Sequence[str]) -> list[str | None]:
        """The ``order`` token of each user's stored list (None where there is none), in one
        pipeline."""
        if not users:
            return []
        keys = [user_key(self._prefix, u) for u in users]

        async def attempt() -> list[str | None]:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.hget(key, ORDER_FIELD)
                    results: list[bytes | None] = await pipe.execute()
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis read failed: {exc}") from exc
            return [None if r is None else r.decode() for r in results]

        return await self._retry.call_async(attempt)

    async def write_popular(self, recs: RecList) -> bool:
        """Store the popular fallback list (compare-and-set like a user's list)."""

        async def attempt() -> bool:
            try:
                written = await self._script(
                    keys=[popular_key(self._prefix)], args=[recs.order, encode(recs)]
                )
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis write failed: {exc}") from exc
            return bool(written)

        return await self._retry.call_async(attempt)

    async def write_items(self, version: str, ids: Sequence[str]) -> bool:
        """Store the item table of model ``version`` unless Redis holds it; whether this
        call stored it.

        A version's items never change, so a table that exists is the right one,
        and only a Redis that lacks it (a new version, a Redis that lost its
        data) is sent its bytes (hundreds of KB for a large catalogue) again.
        """
        key = items_key(self._prefix, version)

        async def attempt() -> bool:
            try:
                if await self._client.exists(key):
                    return False
                await self._client.set(key, encode_items(ids))
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis write failed: {exc}") from exc
            return True

        return await self._retry.call_async(attempt)

    async def online_counts(self, arms: Sequence[tuple[str, str]]) -> list[OnlineCounts]:
        """Every worker's online counts of each ``(version, arm)`` (:mod:`schemas.online`),
        in one pipeline: what the canary's test reads."""

        async def attempt() -> list[OnlineCounts]:
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for version, arm in arms:
                        pipe.hgetall(online_key(self._prefix, version, arm))
                    results: list[dict[bytes, bytes]] = await pipe.execute()
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis read failed: {exc}") from exc
            return [decode_counts(fields) for fields in results]

        return await self._retry.call_async(attempt)

    async def epoch(self) -> tuple[str, bool]:
        """The token naming the data Redis holds now, and whether this call stored it.

        One script call (``GET``, and ``SET`` when the key is missing), retried
        like the writes. See ``P epoch`` in :mod:`schemas.recs`. On a cluster,
        one call per primary, each on that primary's own token; the tokens
        joined are the epoch, so a single node that restarted empty changes it.
        """
        fresh = uuid.uuid4().hex

        async def attempt() -> list[str]:
            try:
                keys = await self._epoch_keys()
                stored: list[bytes] = [await self._epoch(keys=[key], args=[fresh]) for key in keys]
            except TRANSIENT_ERRORS as exc:
                raise TransientError(f"redis epoch check failed: {exc}") from exc
            return [token.decode() for token in stored]

        tokens = await self._retry.call_async(attempt)
        return ",".join(tokens), fresh in tokens

    async def _epoch_keys(self) -> list[str]:
        """The epoch key, or on a cluster each primary's: the first tag whose slot it serves.

        The tag follows the slot map: a failover keeps it (the promoted
        replica serves the same slots, and holds the token), a reshard that
        moves a primary's first tagged slot away makes that primary's token new
        once, and the workers write their lists again, as after a loss.
        """
        if not isinstance(self._client, RedisCluster):
            return [epoch_key(self._prefix)]
        await self._client.initialize()
        # the primaries that serve slots (a node just added serves none yet)
        slots = self._client.nodes_manager.slots_cache.values()
        primaries = {nodes[0].name for nodes in slots if nodes}
        keys: dict[str, str] = {}
        tag = 0
        while len(keys) < len(primaries):
            key = epoch_key(self._prefix, str(tag))
            node = self._client.get_node_from_key(key)
            if node is not None and node.name in primaries:
                keys.setdefault(node.name, key)
            tag += 1
        return sorted(keys.values())

    async def close(self) -> None:
        await self._client.aclose()
