"""Item tables of versions the store no longer holds are deleted, against a real redis-server."""

from __future__ import annotations

import redis

from freshrec.settings import Settings
from retrain.item_tables import drop_item_tables, drop_item_tables_or_warn
from schemas.recs import encode_items, items_key


def test_the_tables_of_versions_not_kept_go_and_nothing_else(
    settings: Settings, redis_client: redis.Redis
) -> None:
    prefix = settings.key_prefix
    for version in ("v1", "v2", "v3"):
        redis_client.set(items_key(prefix, version), encode_items(["a", "b"]))
    other = items_key(f"{prefix}other:", "v1")  # another deployment's table
    redis_client.set(other, encode_items(["a"]))
    assert drop_item_tables(redis_client, prefix, {"v3"}) == ["v1", "v2"]
    assert redis_client.exists(items_key(prefix, "v3"), other) == 2
    assert redis_client.exists(items_key(prefix, "v1"), items_key(prefix, "v2")) == 0
    assert drop_item_tables(redis_client, prefix, {"v3"}) == []


def test_a_prefix_with_glob_characters_matches_only_itself(
    settings: Settings, redis_client: redis.Redis
) -> None:
    star = f"{settings.key_prefix}a*"
    redis_client.set(items_key(star, "v1"), b"[]")
    redis_client.set(items_key(f"{settings.key_prefix}ab", "v1"), b"[]")
    assert drop_item_tables(redis_client, star, set()) == ["v1"]
    assert redis_client.exists(items_key(f"{settings.key_prefix}ab", "v1")) == 1


def test_redis_away_leaves_the_tables_for_the_next_prune(settings: Settings) -> None:
    client = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    assert drop_item_tables_or_warn(client, settings.key_prefix, set()) == []
