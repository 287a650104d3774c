"""The retrain reads the items taken down from Redis, to leave them out of the popular list."""

from __future__ import annotations

import redis

from freshrec.settings import Settings
from retrain.catalog import read_unavailable
from schemas.items import encode_takedown, takedown_key
from schemas.recs import DATA_FIELD


def test_the_takedown_set_is_read_and_a_garbled_one_reads_as_empty(
    settings: Settings, redis_client: redis.Redis
) -> None:
    prefix = settings.key_prefix
    assert read_unavailable(redis_client, prefix) == frozenset()  # no catalog yet
    redis_client.hset(takedown_key(prefix), DATA_FIELD, encode_takedown(3, {"m1", "m2"}))
    assert read_unavailable(redis_client, prefix) == {"m1", "m2"}
    redis_client.hset(takedown_key(prefix), DATA_FIELD, b"garbage")
    assert read_unavailable(redis_client, prefix) == frozenset()
