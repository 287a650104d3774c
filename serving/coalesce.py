"""Coalesce the ``HGET``s of concurrent requests into one round trip per event-loop turn.

Each batch also carries one ``HGET`` (of the same field) of a small value every request needs
(``also``: the catalog's takedown value, :mod:`schemas.items`), so that every
request gets it read in the same round trip as its list, for one command per
batch rather than one per request.

redis-py's asyncio client spends about as much CPU on one command (pool
checkout, retry wrapper, packing, parsing) as the rest of a request put
together; sent together on one connection, ten commands cost a fraction of that
each. The batch is packed and read here on a connection of the client's own
pool under the client's own retry policy (:meth:`HgetCoalescer._exchange`),
without redis-py's per-command pipeline bookkeeping.
So every request still gets its list with one round trip, but the requests
that arrive in the same turn of the event loop share it: the first one
schedules a flush for the end of the turn, the others join its batch. Under
light load a batch has one command and nothing is delayed; under heavy load
batches grow by themselves, which is exactly when the CPU matters.

A batch either succeeds command by command (a wrong-type key fails only its
own request) or, on a connection error after the client's retries or when
``deadline_s`` passes (a builtin :class:`TimeoutError`), fails every request
in it with that error. The deadline is one timer per batch, not per request.

On a Redis Cluster the batch is split by the primary that owns each key's
slot, and each node's part goes through redis-py's cluster pipeline on its
own, all at once: still one round trip per request (to the one node holding
its user's key), and one per node per batch. Each node's part has its own
deadline and its own failure: a node being failed over answers 503 for its
own users while the others are served. One pipeline for the whole batch did
not do that: redis-py fails a whole cluster pipeline on one node's
``ConnectionError``, and in the ~4 s before a killed primary's replica took
over, 127-146 requests of users on healthy primaries got 503 (issue 28).
The ``also`` read travels with the part of its own node; when that node
fails, the batch's requests get the last ``also`` value read, so a node's
failover never empties the takedown set. ``MOVED``/``ASK`` are followed by
each pipeline, and a connection lost while sending makes it read the slot map
again and resend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from freshrec.redis_client import AsyncRedis

#: ``HGET <key> <field>`` in RESP, the key's length and bytes and the packed field filled in.
_HGET = b"*3\r\n$4\r\nHGET\r\n$%d\r\n%b\r\n%b"

#: One request's answer: its ``HGET``'s reply and the batch's ``also`` reply.
Reply = tuple[bytes | None, bytes | None]


class HgetCoalescer:
    """``await hget(key)`` for one field (or another field of the key), batched with the
    other calls of the same loop turn; with ``also``, each batch also reads that key."""

    def __init__(
        self, client: AsyncRedis, field: str, deadline_s: float, also: str | None = None
    ) -> None:
        self.client = client
        self.field = field
        self.also = also
        self._field = _packed(field)
        self.deadline_s = deadline_s
        self._batch: list[tuple[str, bytes, asyncio.Future[Reply]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: The last ``also`` value read, for a batch whose ``also`` read failed alone.
        self._last_also: bytes | None = None

    async def hget(self, key: str) -> bytes | None:
        """The key's field."""
        return (await self.hget_also(key))[0]

    async def hget_also(self, key: str, field: str | None = None) -> Reply:
        """The key's field (``field``, else the coalescer's) and the batch's ``also`` value."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._flush)
        self._batch.append((key, self._field if field is None else _packed(field), future))
        return await future

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[str, bytes, asyncio.Future[Reply]]]) -> None:
        keys = [(key, field) for key, field, _ in batch]
        replies: list[bytes | BaseException | None]
        try:
            if isinstance(self.client, RedisCluster):
                replies = await self._cluster_exchange(self.client, keys)  # deadline per node
            else:
                async with asyncio.timeout(self.deadline_s):
                    replies = list(await self._exchange(keys))
        except Exception as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): so are the requests waiting on it
            for _, _, future in batch:
                future.cancel()
            raise
        also: bytes | None = None
        if self.also is not None:
            last = replies.pop()
            if isinstance(last, ResponseError):  # a wrong type is as good as missing
                also = None
            elif isinstance(last, BaseException):  # its node failed: the last value read
                also = self._last_also
            else:
                also = self._last_also = last
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # cancelled: the server is shutting down
                continue
            if isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result((reply, also))

    async def _exchange(self, keys: list[tuple[str, bytes]]) -> list[bytes | RedisError | None]:
        """One ``HGET key field`` per key on one pooled connection, under the client's retry.

        What ``pipeline(transaction=False).execute(raise_on_error=False)`` does
        for these commands, without its per-command bookkeeping (command stack,
        argument encoding, response callbacks, observability hooks), which cost
        more CPU than the rest of the batch: the same pool, the same retry
        policy (a connection or timeout error disconnects, backs off and sends
        the whole batch again), every reply read before the connection goes
        back, and an error reply (``WRONGTYPE``) is that command's result.
        """
        assert not isinstance(self.client, RedisCluster)  # _cluster_exchange's
        commands = [_HGET % (len(k), k, field) for k, field in ((k.encode(), f) for k, f in keys)]
        if self.also is not None:
            also = self.also.encode()
            commands.append(_HGET % (len(also), also, self._field))
        packed = b"".join(commands)
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            replies: list[bytes | RedisError | None] = await conn.retry.call_with_retry(
                lambda: _roundtrip(conn, packed, len(commands)), lambda _error: conn.disconnect()
            )
            return replies
        finally:
            await pool.release(conn)

    async def _cluster_exchange(
        self, client: RedisCluster, keys: list[tuple[str, bytes]]
    ) -> list[bytes | BaseException | None]:
        """The batch on a cluster (``also`` last): one pipeline per node owning some of its
        keys, sent at once, each under its own deadline; a node's failure is the result of
        its keys only."""
        commands = [(key, _unpacked(field)) for key, field in keys]
        if self.also is not None:
            commands.append((self.also, self.field.encode()))
        await client.initialize()  # the slot map, once (later calls return at once)
        by_node: dict[str, list[int]] = {}
        for index, (key, _) in enumerate(commands):
            try:
                owner = client.nodes_manager.get_node_from_slot(client.keyslot(key)).name
            except RedisError:  # a slot the map lacks now: its own part, routed by redis-py
                owner = ""
            by_node.setdefault(owner, []).append(index)
        replies: list[bytes | BaseException | None] = [None] * len(commands)

        async def one_node(indexes: Sequence[int]) -> None:
            got: list[bytes | BaseException | None]
            try:
                async with asyncio.timeout(self.deadline_s):
                    async with client.pipeline(transaction=False) as pipe:
                        for index in indexes:
                            pipe.execute_command("HGET", *commands[index])
                        got = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                got = [exc] * len(indexes)
            for index, reply in zip(indexes, got, strict=True):
                replies[index] = reply

        await asyncio.gather(*(one_node(indexes) for indexes in by_node.values()))
        return replies


def _packed(field: str) -> bytes:
    """A field as its RESP bulk string."""
    raw = field.encode()
    return b"$%d\r\n%b\r\n" % (len(raw), raw)


def _unpacked(packed: bytes) -> bytes:
    """The field of a :func:`_packed` bulk string."""
    return packed.split(b"\r\n", 1)[1][:-2]


async def _roundtrip(
    conn: AbstractConnection, packed: bytes, count: int
) -> list[bytes | RedisError | None]:
    await conn.send_packed_command(packed)
    replies: list[bytes | RedisError | None] = []
    for _ in range(count):
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies
