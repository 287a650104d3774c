"""Similar-item lists written at publish, read back as the API reads them, gone with the version."""

from __future__ import annotations

import pytest
import redis

from freshrec import model_store
from freshrec.model_store import ModelStore
from freshrec.settings import Settings
from models.als import ALSConfig
from models.similar import similar_items
from models.synthetic import generate
from models.version import ModelVersion, load_version
from models.weighting import DEFAULT_WEIGHTING
from retrain.item_tables import drop_item_tables
from retrain.publish import train_and_publish
from retrain.similar_lists import write_similar_lists
from schemas.recs import decode, decode_items, items_key, similar_key


def test_lists_are_written_before_the_pointer_moves_and_pruned_with_their_version(
    settings: Settings, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a version the pointer named lately is never pruned (a rollback target): here the
    # first version must go with the second publish, so "lately" ends before now (with 0,
    # a prune in the same millisecond as the pointer's move still spared it: a flake)
    monkeypatch.setattr(model_store, "RECENT_S", -1.0)
    prefix = settings.key_prefix
    store = ModelStore(settings.model_store)
    data = generate(n_users=200, n_items=40, n_interactions=4_000, factors=4, seed=1)
    cfg = ALSConfig(factors=4, iterations=5, num_threads=1, seed=1, use_gpu=False)
    pointed_at_write: list[str | None] = []

    def publish() -> str:
        def after_save(version: ModelVersion) -> None:
            pointed_at_write.append(store.current())
            write_similar_lists(redis_client, prefix, version, 5)

        outcome = train_and_publish(
            store,
            data.log,
            cfg,
            DEFAULT_WEIGHTING,
            popular_length=10,
            snapshot={},
            keep=1,
            after_save=after_save,
        )
        return outcome.version.version_id

    first = publish()
    assert pointed_at_write == [None]  # written before the pointer named the version
    table = redis_client.get(items_key(prefix, first))
    assert table is not None
    names = decode_items(table)
    stored = redis_client.hgetall(similar_key(prefix, first))
    assert len(stored) == 40
    ids, _ = similar_items(load_version(store, first).item_factors, 5)
    item0 = names[0]
    recs = decode(stored[item0.encode()], names, None)
    assert [i.item for i in recs.items] == [names[j] for j in ids[0]]
    assert recs.model_version == first and recs.updated_at == 0

    second = publish()
    assert drop_item_tables(redis_client, prefix, store.versions()) == [first]
    assert redis_client.exists(similar_key(prefix, first), items_key(prefix, first)) == 0
    assert redis_client.hlen(similar_key(prefix, second)) == 40
