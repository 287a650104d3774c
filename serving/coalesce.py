"""Coalesce the ``HGET``s of concurrent requests into one redis-py pipeline per event-loop turn.

redis-py's asyncio client spends about as much CPU on one command (pool
checkout, retry wrapper, packing, parsing) as the rest of a request put
together; sent as one pipeline, ten commands cost about a quarter of that each.
So every request still gets its list with one round trip, but the requests
that arrive in the same turn of the event loop share it: the first one
schedules a flush for the end of the turn, the others join its batch. Under
light load a batch has one command and nothing is delayed; under heavy load
batches grow by themselves, which is exactly when the CPU matters.

A batch either succeeds command by command (a wrong-type key fails only its
own request) or, on a connection error after the client's retries or when
``deadline_s`` passes (a builtin :class:`TimeoutError`), fails every request
in it with that error. The deadline is one timer per batch, not per request.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis


class HgetCoalescer:
    """``await hget(key)`` for one field, batched with the other calls of the same loop turn."""

    def __init__(self, client: aioredis.Redis, field: str, deadline_s: float) -> None:
        self.client = client
        self.field = field
        self.deadline_s = deadline_s
        self._batch: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def hget(self, key: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        if not self._batch:
            loop.call_soon(self._flush)
        self._batch.append((key, future))
        return await future

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[str, asyncio.Future[bytes | None]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, _ in batch:
            pipe.hget(key, self.field)
        try:
            async with asyncio.timeout(self.deadline_s):
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled (shutdown): so are the requests waiting on it
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # cancelled: the server is shutting down
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
