"""A model version's similar-item lists, computed and written to Redis when it is published.

Every item's nearest neighbours (:func:`models.similar.similar_items`) are
encoded as the API reads them (the compact list format of
:class:`schemas.recs.ItemTable`, indexing into the version's item table) and
stored in one hash per version, ``P similar:<version>`` (:mod:`schemas.recs`),
with the version's item table beside it, in pipelined chunks. The publish step
writes them after the version is saved and before the pointer moves to it, so
that by the time a worker adopts the version (and the API learns of it from
the popular list), its similar lists are there. Pruning deletes them with the
version (:mod:`retrain.item_tables`).
"""

from __future__ import annotations

import time

import numpy as np

from freshrec.redis_client import SyncRedis
from models.similar import similar_items
from models.version import ModelVersion
from schemas.recs import ItemTable, encode_items, items_key, similar_key

#: Items whose lists go to Redis in one pipelined ``HSET``.
CHUNK = 2_000


def write_similar_lists(client: SyncRedis, prefix: str, version: ModelVersion, n: int) -> None:
    """Compute and store ``version``'s similar lists of ``n`` neighbours. Redis errors
    propagate (the caller decides: the retrain fails as transient, pointer unmoved)."""
    ids = version.item_ids.ids
    neighbours, scores = similar_items(version.item_factors, n)
    table = ItemTable(version.version_id, ids)
    written_at = int(time.time() * 1000)
    key = similar_key(prefix, version.version_id)
    client.set(items_key(prefix, version.version_id), encode_items(ids))
    client.unlink(key)  # a version written again (a retried publish) starts clean
    for start in range(0, len(ids), CHUNK):
        stop = min(start + CHUNK, len(ids))
        rows = neighbours[start:stop]
        bodies = table.encode(
            rows,
            scores[start:stop],
            np.full_like(rows, -1),
            np.ones(stop - start, dtype=bool),
            [0] * (stop - start),
            written_at,
        )
        mapping = {ids[i]: b for i, b in zip(range(start, stop), bodies, strict=True) if b}
        client.hset(key, mapping=mapping)  # type: ignore[arg-type]
