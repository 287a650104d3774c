"""Content cold start (issue 23, item 5): a tagged catalog upload recommendable before its
first user, handed over to item fold-in as users arrive.

First the choice of content vectors on tiny data with answers worked by hand,
then the store rules against a real redis-server (a content vector never
replaces a fold one), then the whole path: two workers on four partitions, the
real broker and the API, on synthetic data whose tags follow the planted
clusters.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from freshrec.backoff import NoBackoff
from freshrec.redis_client import redis_client as async_redis
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from freshrec.stack import free_port, wait_until
from models.content import TagSpace
from models.ids import IdMap
from models.recommender import Recommender
from schemas.interim import InterimVector, decode_vector, encode_vector, generation_key, interim_key
from schemas.items import ItemRecord, encode_record, items_hash_key, unavailable_key
from streams.content_start import ContentStart, model_tags, planned
from streams.metrics import WorkerMetrics
from streams.model_follower import ModelFollower
from tests.api_process import api_process, get_json
from tests.streams.worker import (
    BASE_TS,
    WorkerProcess,
    histories,
    publish,
    publish_model,
    read_list,
    send_raw,
    synthetic,
    watch,
)

#: Three model items: a and b and c, on two axes; d has no tags.
FACTORS = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [5.0, 5.0]], dtype=np.float32)
TAGS = {"a": ("x", "common"), "b": ("y", "common"), "c": ("y", "common")}


def _model(version: str = "v1", items: Sequence[str] = ("a", "b", "c", "d")) -> Recommender:
    return Recommender(version, IdMap(list(items)), FACTORS[: len(items)], 0.1, 2.0)


def _record(item: str, tags: Sequence[str] = (), ts: int = BASE_TS) -> ItemRecord:
    return ItemRecord(item, ts, None, tuple(tags))


def _catalog(extra: Sequence[ItemRecord] = ()) -> dict[str, ItemRecord]:
    records = {i: _record(i, t) for i, t in TAGS.items()} | {"d": _record("d")}
    return records | {r.item_id: r for r in extra}


def test_content_vectors_are_the_specificity_weighted_mean_of_the_items_sharing_tags() -> None:
    """Worked by hand: 3 tagged model items, so ``x`` weighs log 3, ``y`` log 3/2 and
    ``common`` (every item has it) nothing; the mean's length is the weighted mean
    length of the items it stands among."""
    model = _model()
    new = [
        _record("only-x", ["x"]),
        _record("only-y", ["y", "common"]),
        _record("x-and-y", ["x", "y"]),
        _record("common", ["common"]),
        _record("nowhere", ["z"]),
        _record("untagged"),
        _record("a", ["y"]),  # the model knows it: never a content vector
    ]
    space = TagSpace(model_tags(model, _catalog()), model.foldin.item_factors)
    got = planned(model, space, new)
    assert set(got) == {"only-x", "only-y", "x-and-y", "common", "nowhere", "untagged"}

    def vector(item: str) -> np.ndarray:
        found = got[item]
        assert found is not None, item
        return found

    np.testing.assert_allclose(vector("only-x"), [1.0, 0.0], atol=1e-6)  # a alone
    # b and c alike: mean (0, 1.5), lengths 1 and 2 -> 1.5
    np.testing.assert_allclose(vector("only-y"), [0.0, 1.5], atol=1e-6)
    wx, wy = math.log(3), math.log(1.5)
    mean = (wx * np.array([1, 0]) + wy * np.array([0, 1]) + wy * np.array([0, 2])) / (wx + 2 * wy)
    length = (wx * 1 + wy * 1 + wy * 2) / (wx + 2 * wy)
    np.testing.assert_allclose(vector("x-and-y"), mean / np.linalg.norm(mean) * length, atol=1e-6)
    # a tag that every item has says nothing, but it is all there is: the plain mean
    plain = FACTORS[:3].mean(axis=0)
    length = np.linalg.norm(FACTORS[:3], axis=1).mean()
    np.testing.assert_allclose(vector("common"), plain / np.linalg.norm(plain) * length, atol=1e-6)
    # no model item shares its tags, or it has none: no vector (it stays out of lists)
    assert got["nowhere"] is None and got["untagged"] is None


def _starter(settings: Settings, model: Recommender, metrics: WorkerMetrics) -> ContentStart:
    follower = ModelFollower(settings.model_store, metrics)
    follower.recommender = model
    client = async_redis(settings, "test-content")
    retry = RetryPolicy(NoBackoff(), max_attempts=1)
    return ContentStart(settings, client, follower, metrics, retry)


def _store(client: redis.Redis, settings: Settings, records: Sequence[ItemRecord]) -> None:
    """The item table as the catalog agent leaves it."""
    mapping: Any = {r.item_id: encode_record(r) for r in records}
    client.hset(items_hash_key(settings.key_prefix), mapping=mapping)


def _stored(client: redis.Redis, settings: Settings, version: str) -> dict[str, InterimVector]:
    raw: Any = client.hgetall(interim_key(settings.key_prefix, version))
    return {k.decode(): decode_vector(v) for k, v in raw.items()}


def _generation(client: redis.Redis, settings: Settings, version: str) -> int:
    raw: Any = client.get(generation_key(settings.key_prefix, version))
    return int(raw or 0)


@pytest.mark.integration
def test_a_content_vector_follows_its_tags_and_never_replaces_a_fold_vector(
    settings: Settings, redis_client: redis.Redis
) -> None:
    model = _model()
    metrics = WorkerMetrics()
    key = interim_key(settings.key_prefix, "v1")
    fold = encode_vector(InterimVector(np.array([9.0, 9.0]), "fold", 3, 1, 2))
    redis_client.hset(key, "folded", fold)
    first = [_record("n1", ["x"]), _record("folded", ["y"]), _record("n2")]
    _store(redis_client, settings, [*_catalog().values(), *first])

    async def go() -> None:
        starter = _starter(settings, model, metrics)
        # n1 starts from its tags; folded keeps its fold vector; n2 has no tags
        assert await starter.written(first) == 1
        got = _stored(redis_client, settings, "v1")
        assert set(got) == {"n1", "folded"}
        assert got["n1"].source == "content" and got["n1"].users == 0
        np.testing.assert_allclose(got["n1"].vector, [1.0, 0.0], atol=1e-6)
        assert redis_client.hget(key, "folded") == fold
        assert _generation(redis_client, settings, "v1") == 1
        assert metrics.new_items_content_started._value.get() == 1
        # the same record again (a redelivery): nothing written, no generation raised
        assert await starter.written(first) == 0
        assert _generation(redis_client, settings, "v1") == 1
        # its tags change: the vector follows them
        retagged = [_record("n1", ["y"], BASE_TS + 1)]
        _store(redis_client, settings, retagged)
        assert await starter.written(retagged) == 1
        np.testing.assert_allclose(
            _stored(redis_client, settings, "v1")["n1"].vector, [0.0, 1.5], atol=1e-6
        )
        # the item agent's fold vector replaces it (the hand-over); no content write
        # takes it back, whatever the tags, and no record without tags drops it
        redis_client.hset(key, "n1", fold)
        for tags in (["x"], []):
            again = [_record("n1", tags, BASE_TS + 2)]
            _store(redis_client, settings, again)
            assert await starter.written(again) == 0
            assert redis_client.hget(key, "n1") == fold
        # the item agent drops the fold vector (its users forgot it): content again,
        # from its tags now, under the current version only
        _store(redis_client, settings, [_record("n1", ["x"], BASE_TS + 3)])
        redis_client.hdel(key, "n1")
        assert await starter.restore("v0", ["n1"]) == 0
        assert await starter.restore("v1", ["n1"]) == 1
        restored = _stored(redis_client, settings, "v1")["n1"]
        assert restored.source == "content"
        np.testing.assert_allclose(restored.vector, [1.0, 0.0], atol=1e-6)
        # a content vector whose item loses its tags is dropped
        _store(redis_client, settings, [_record("n3", ["x"])])
        await starter.written([_record("n3", ["x"])])
        assert "n3" in _stored(redis_client, settings, "v1")
        _store(redis_client, settings, [_record("n3", [], BASE_TS + 1)])
        assert await starter.written([_record("n3")]) == 1
        assert "n3" not in _stored(redis_client, settings, "v1")
        assert metrics.new_items_content_started._value.get() == 3

    asyncio.run(go())


@pytest.mark.integration
def test_at_a_version_switch_the_items_it_still_does_not_know_get_content_vectors(
    settings: Settings, redis_client: redis.Redis
) -> None:
    new = [_record("n1", ["x"]), _record("n2", ["y"]), _record("n3")]
    _store(redis_client, settings, [*_catalog().values(), *new])

    async def go() -> None:
        metrics = WorkerMetrics()
        starter = _starter(settings, _model("v1", ("a", "b", "c", "d")), metrics)
        assert await starter.follow() == 2
        assert set(_stored(redis_client, settings, "v1")) == {"n1", "n2"}
        assert await starter.follow() == 0  # the same version: nothing to build
        # v2 knows n1 (trained in): only n2 starts from its tags under v2
        follower = starter._follower
        follower.recommender = _model("v2", ("a", "b", "c", "n1"))
        assert await starter.follow() == 1
        got = _stored(redis_client, settings, "v2")
        assert set(got) == {"n2"}
        np.testing.assert_allclose(got["n2"].vector, [0.0, 1.5], atol=1e-6)
        assert set(_stored(redis_client, settings, "v1")) == {"n1", "n2"}  # left to the prune

    asyncio.run(go())


# --- the whole path on planted clusters ------------------------------------------------

#: New items per planted cluster, tagged with their cluster's tag.
PER_CLUSTER = 2


def _catalog_messages(records: Sequence[ItemRecord]) -> list[tuple[bytes, bytes]]:
    return [(r.item_id.encode(), encode_record(r)) for r in records]


def _hit_rate(
    client: redis.Redis, settings: Settings, items: dict[str, int], users_of: dict[int, list[str]]
) -> float:
    """Mean over ``items`` (item -> its cluster) of the share of the cluster's users whose
    stored list holds the item."""
    lists = {u: read_list(client, settings, u) for us in users_of.values() for u in us}
    rates = []
    for item, cluster in items.items():
        users = users_of[cluster]
        held = sum(
            (r := lists[u]) is not None and any(i.item == item for i in r.items) for u in users
        )
        rates.append(held / len(users))
    return float(np.mean(rates))


@pytest.mark.integration
def test_tagged_new_items_reach_their_clusters_users_at_once_and_hand_over_to_fold_in(
    worker_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """Synthetic data with 8 planted clusters; every model item is tagged with its cluster
    (``c<k>``) and a tag every item has. New items with their cluster's tag and no user
    reach the lists of that cluster's users (their main taste) written next, far more
    often than items placed at random (tagged with a cluster drawn at random). Then a
    content item's users arrive: the item agent's fold vector takes over; and a new
    version that does not know them gets their content vectors."""
    s = worker_settings.replace(
        list_length=20, api_max_k=20, api_default_k=20, new_item_min_users=3
    )
    data = synthetic()
    version = publish_model(s, data)
    clusters = data.item_cluster
    model_items = [
        _record(item, [f"c{clusters[n]}", "movie"]) for n, item in enumerate(data.log.items.ids)
    ]
    send_raw(s, s.topic_items, _catalog_messages(model_items))
    workers = [start_worker(s), start_worker(s.replace(worker_web_port=free_port()))]
    publish(s, histories(data.log, per_user=15))
    users = data.log.users.ids
    wait_until(
        lambda: all(read_list(redis_client, s, u) is not None for u in users[::7]),
        60,
        "the users' lists",
    )

    rng = np.random.default_rng(7)
    factors = int(clusters.max()) + 1
    tagged = {f"tagged-{k}-{j}": k for k in range(factors) for j in range(PER_CLUSTER)}
    placed = {f"random-{k}-{j}": k for k in range(factors) for j in range(PER_CLUSTER)}
    drawn = {item: int(rng.integers(factors)) for item in placed}
    uploads = [_record(i, [f"c{k}", "movie"], BASE_TS + 50_000) for i, k in tagged.items()] + [
        _record(i, [f"c{drawn[i]}", "movie"], BASE_TS + 50_000) for i in placed
    ]
    started = time.monotonic()
    send_raw(s, s.topic_items, _catalog_messages(uploads))
    wait_until(
        lambda: len(_stored(redis_client, s, version)) == len(uploads), 30, "the content vectors"
    )
    content_s = time.monotonic() - started
    assert {v.source for v in _stored(redis_client, s, version).values()} == {"content"}

    # the lists written next: every user's, by one event each on an item they know
    nudge = BASE_TS + 60_000
    _nudge(s, redis_client, users, data.log.items.ids[0], nudge, "nudge")
    users_of = {
        k: [u for n, u in enumerate(users) if data.user_clusters[n, 0] == k] for k in range(factors)
    }
    tagged_rate = _hit_rate(redis_client, s, tagged, users_of)
    random_rate = _hit_rate(redis_client, s, placed, users_of)
    print(
        f"content vectors in {content_s:.2f}s; hit rate in the cluster's lists: "
        f"tagged {tagged_rate:.2f}, placed at random {random_rate:.2f}"
    )
    assert tagged_rate >= 0.8
    assert tagged_rate >= 3 * random_rate

    # the API says where a new item's vector comes from
    item = next(iter(tagged))
    audience = [u for u in users_of[tagged[item]] if _holds(redis_client, s, u, item)]
    with api_process(s.replace(api_port=free_port()), tmp_path / "api.log") as api:
        status, body = get_json(f"{api}/recs/{audience[0]}")
    assert status == 200, body
    entries = {e["item"]: e for e in body["items"]}
    assert entries[item]["source"] == "content", body
    assert all("source" not in e for i, e in entries.items() if i not in tagged | placed)

    # a takedown applies to a content item: out of the lists written next
    down = next(i for i in tagged if i != item)
    gone = ItemRecord(down, BASE_TS + 55_000, None, (f"c{tagged[down]}", "movie"), False)
    send_raw(s, s.topic_items, _catalog_messages([gone]))
    wait_until(
        lambda: bool(redis_client.sismember(unavailable_key(s.key_prefix), down)),
        30,
        "the takedown",
    )
    again = nudge + 500
    _nudge(s, redis_client, users, data.log.items.ids[0], again, "again")
    assert not any(_holds(redis_client, s, u, down) for u in users)
    assert _holds(redis_client, s, audience[0], item)

    # its users arrive: once it has MIN_USERS, the fold vector takes over
    watchers = audience[: s.new_item_min_users]
    publish(s, [watch(f"w-{u}", u, item, again + 1000) for u in watchers])
    wait_until(
        lambda: _stored(redis_client, s, version)[item].source == "fold",
        30,
        "the fold vector of the content item",
    )
    assert _stored(redis_client, s, version)[item].users == len(watchers)
    # its record again (a retag): the content writer leaves the fold vector alone
    send_raw(s, s.topic_items, _catalog_messages([_record(item, ["c0"], BASE_TS + 70_000)]))
    marker = _record("tagged-late", ["c1", "movie"], BASE_TS + 70_001)
    send_raw(s, s.topic_items, _catalog_messages([marker]))
    wait_until(
        lambda: "tagged-late" in _stored(redis_client, s, version), 30, "a later upload's vector"
    )
    assert _stored(redis_client, s, version)[item].source == "fold"

    # a watcher forgets: below MIN_USERS, the fold vector goes and content comes back
    forgetter = watchers[0]
    forget = {"type": "forget", "event_id": f"f-{forgetter}", "user_id": forgetter}
    publish(s, [forget | {"ts": again + 3000}])
    wait_until(
        lambda: (
            (v := _stored(redis_client, s, version).get(item)) is not None and v.source == "content"
        ),
        30,
        "the content vector back after the forget",
    )

    # counted: each upload's vector started once, the late one and the restored one too
    def content_started() -> float:
        return sum(
            w.metric_total("freshrec_worker_new_items_content_started_total") for w in workers
        )

    wait_until(lambda: content_started() == len(uploads) + 2, 10, "the started count")
    wait_until(
        lambda: any(w.metric_total("freshrec_worker_new_items_content") > 0 for w in workers),
        30,
        "the content items' gauge",
    )

    # a new version that still does not know them: their content vectors under it, the
    # folded item's too (its users' contributions come again with their next events)
    switched = publish_model(s, data, seed=43)
    wanted = {*tagged, *placed, "tagged-late"}
    wait_until(
        lambda: set(_stored(redis_client, s, switched)) == wanted,
        30,
        "the content vectors under the new version",
    )
    assert {v.source for v in _stored(redis_client, s, switched).values()} == {"content"}


def _nudge(
    s: Settings, client: redis.Redis, users: Sequence[str], item: str, ts: int, tag: str
) -> None:
    """One event each of ``users`` on ``item`` at ``ts`` (event ids ``tag-user``), and wait
    until every one's list is the one written from it: the lists written next."""
    publish(s, [watch(f"{tag}-{u}", u, item, ts) for u in users])
    wait_until(
        lambda: all(
            (r := read_list(client, s, u)) is not None and r.updated_at == ts for u in users
        ),
        60,
        f"the lists written from the {tag} events",
    )


def _holds(client: redis.Redis, settings: Settings, user: str, item: str) -> bool:
    recs = read_list(client, settings, user)
    return recs is not None and any(i.item == item for i in recs.items)
