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

On a Redis Cluster the batch goes through redis-py's cluster pipeline instead,
which splits it by the node owning each key's slot and sends every node its
part at once: still one round trip per request (to the one node holding its
user's key), and one per node per batch. A command that fails there fails its
own request only (a node being failed over answers 503 for its users while
the others are served); ``MOVED``/``ASK`` are followed by the pipeline, and a
connection lost while sending makes it read the slot map again and resend.
"""

from __future__ import annotations

import asyncio

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
        try:
            async with asyncio.timeout(self.deadline_s):
                replies = await self._exchange([(key, field) for key, field, _ in batch])
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
            # a wrong type is as good as missing, for the reader
            also = None if isinstance(last, RedisError) else last
        for (_, _, future), reply in zip(batch, replies, strict=True):
            if future.done():  # cancelled: the server is shutting down
                continue
            if isinstance(reply, Exception):
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
        if isinstance(self.client, RedisCluster):
            return await self._cluster_exchange(self.client, keys)
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
    ) -> list[bytes | RedisError | None]:
        """The batch on a cluster: one pipeline, split by node, each command's error its own."""
        async with client.pipeline(transaction=False) as pipe:
            for key, field in keys:
                pipe.execute_command("HGET", key, _unpacked(field))
            if self.also is not None:
                pipe.execute_command("HGET", self.also, self.field)
            replies: list[bytes | RedisError | None] = await pipe.execute(raise_on_error=False)
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
