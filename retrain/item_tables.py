"""The Redis item tables of model versions the store no longer holds, deleted when versions are.

A list in the compact format names its items by index into its model
version's item table, ``P items:<version>`` (:mod:`schemas.recs`), which a
worker writes when it adopts the version and which nothing else removes. A
version pruned from the store is never adopted again, and the workers rewrote
their lists when they followed the newer versions that were kept, so its table
is only memory (about 250 KB for 20,000 items). So are its similar-item
lists (``P similar:<version>``, :mod:`retrain.similar_lists`), deleted with
it (``UNLINK``: Redis frees a large hash in the background), and so are its
interim item vectors and their generation (``P interim:<version>``,
:mod:`schemas.interim`). The jobs that prune versions
(``freshrec retrain`` and ``freshrec models prune``) delete every table whose
version the store no longer holds, so one that a prune could not delete
(Redis away) goes at the next.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection

import redis

from freshrec.redis_client import SyncRedis
from schemas.interim import generation_key, interim_key
from schemas.recs import items_key, similar_key

log = logging.getLogger(__name__)


def drop_item_tables(client: SyncRedis, prefix: str, kept: Collection[str]) -> list[str]:
    """Delete the item tables, similar-item lists and interim vectors of every version not
    in ``kept``; returns those versions.

    The tables are found with ``SCAN`` (every primary on a Redis Cluster) and
    deleted with one ``UNLINK`` each in one pipeline, which a cluster client
    splits by node.
    """
    stale: set[str] = set()
    for key_of in (items_key, similar_key, interim_key):
        start = key_of(prefix, "")
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", start) + "*"
        for key in client.scan_iter(match=pattern, count=1000):
            version = (key.decode() if isinstance(key, bytes) else str(key))[len(start) :]
            if version not in kept:
                stale.add(version)
    if stale:
        with client.pipeline(transaction=False) as pipe:
            for version in stale:
                # one key per command: a cluster holds them on different nodes
                pipe.unlink(items_key(prefix, version))
                pipe.unlink(similar_key(prefix, version))
                pipe.unlink(interim_key(prefix, version))
                pipe.unlink(generation_key(prefix, version))
            pipe.execute()
    return sorted(stale)


def drop_item_tables_or_warn(client: SyncRedis, prefix: str, kept: Collection[str]) -> list[str]:
    """:func:`drop_item_tables`, where Redis being away must not fail the job that pruned:
    logs a warning and returns nothing (the tables go at the next prune)."""
    try:
        return drop_item_tables(client, prefix, kept)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        log.warning("item tables of pruned versions left in Redis until the next prune: %s", exc)
        return []
