"""The worker's copy of the interim vectors against a real redis-server: the generation
asked again only once older than its age, the hash reread only when the generation moved."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from freshrec.redis_client import redis_client as async_redis_client
from freshrec.settings import Settings
from schemas.interim import InterimVector, encode_vector, generation_key, interim_key
from streams.interim import InterimVectors


def _share(client: Any, settings: Settings, version: str, item: str) -> None:
    """What the item agent does: write a vector, then raise the version's generation."""
    vector = InterimVector(np.ones(4, dtype=np.float32), "fold", 3, 1, 2)
    client.hset(interim_key(settings.key_prefix, version), item, encode_vector(vector))
    client.incr(generation_key(settings.key_prefix, version))


def test_a_block_younger_than_its_age_is_reused_and_reread_once_older(
    settings: Settings, redis_client: Any
) -> None:
    """Issue 27 beside issue 23: one GET of the generation per batch was a round trip before
    every batch's work; the block is reused while younger than ``max_age_s``, never
    longer, and a version change asks at once."""
    asyncio.run(_refreshes(settings, redis_client))


async def _refreshes(settings: Settings, redis_client: Any) -> None:
    client = async_redis_client(settings, "interim-test")
    try:
        _share(redis_client, settings, "v1", "new-a")
        vectors = InterimVectors(settings, client, max_age_s=0.3)
        first = time.monotonic()
        assert (await vectors.refresh("v1")).ids == ("new-a",)
        _share(redis_client, settings, "v1", "new-b")
        assert (await vectors.refresh("v1")).ids == ("new-a",)  # within its age: no read
        deadline = first + 10
        while (ids := (await vectors.refresh("v1")).ids) != ("new-a", "new-b"):
            assert time.monotonic() < deadline, ids
            await asyncio.sleep(0.01)
        assert time.monotonic() - first >= 0.3  # not asked again before its age
        _share(redis_client, settings, "v2", "new-c")
        assert (await vectors.refresh("v2")).ids == ("new-c",)  # another version: asked now
        assert (await vectors.refresh(None)).ids == ()
        always = InterimVectors(settings, client)  # max_age_s 0: every call asks
        assert (await always.refresh("v2")).ids == ("new-c",)
        _share(redis_client, settings, "v2", "new-d")
        assert (await always.refresh("v2")).ids == ("new-c", "new-d")
    finally:
        await client.aclose()
