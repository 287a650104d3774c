"""The worker's takedown reader against a real redis-server: a set reused for at most its age."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from freshrec.redis_client import redis_client as async_redis_client
from freshrec.settings import Settings
from schemas.items import encode_takedown, takedown_key
from schemas.recs import DATA_FIELD
from streams.catalog import TakedownReader


def _take_down(client: Any, settings: Settings, revision: int, items: set[str]) -> None:
    client.hset(takedown_key(settings.key_prefix), DATA_FIELD, encode_takedown(revision, items))


def test_a_set_younger_than_its_age_is_reused_and_read_again_once_older(
    settings: Settings, redis_client: Any
) -> None:
    """Issue 27: one HGET per batch was a round trip before every batch's work; the set is
    now reused while younger than ``max_age_s``, and never longer."""
    asyncio.run(_reads(settings, redis_client))


async def _reads(settings: Settings, redis_client: Any) -> None:
    client = async_redis_client(settings, "takedown-test")
    try:
        _take_down(redis_client, settings, 1, {"a"})
        reader = TakedownReader(settings, client, max_age_s=0.3)
        first = time.monotonic()
        assert await reader.read() == {"a"}
        _take_down(redis_client, settings, 2, {"a", "b"})
        assert await reader.read() == {"a"}  # within its age: no round trip
        deadline = first + 10
        while (got := await reader.read()) != {"a", "b"} and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert got == {"a", "b"}
        assert time.monotonic() - first >= 0.3  # not read again before its age
        always = TakedownReader(settings, client)  # max_age_s 0: every call reads
        assert await always.read() == {"a", "b"}
        _take_down(redis_client, settings, 3, {"c"})
        assert await always.read() == {"c"}
    finally:
        await client.aclose()
