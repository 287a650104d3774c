"""``GET /similar/{item}`` and ``POST /recs`` from similar lists in a real redis-server."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from freshrec.settings import Settings
from models.als import ALSConfig
from models.similar import similar_items
from models.synthetic import generate
from models.version import ModelVersion
from models.weighting import DEFAULT_WEIGHTING
from retrain.publish import build_version
from retrain.similar_lists import write_similar_lists
from schemas.items import ItemRecord, encode_record, encode_takedown, items_hash_key, takedown_key
from schemas.recs import DATA_FIELD
from tests.serving.conftest import ApiClient, ListWriter


@pytest.fixture(scope="module")
def version() -> ModelVersion:
    data = generate(n_users=300, n_items=48, n_interactions=6_000, factors=4, seed=5)
    cfg = ALSConfig(factors=4, iterations=8, num_threads=1, seed=1, use_gpu=False)
    return build_version(data.log, cfg, DEFAULT_WEIGHTING, popular_length=48, snapshot={})


@pytest.fixture
def published(
    version: ModelVersion, redis_client: Any, settings: Settings, write_list: ListWriter
) -> ModelVersion:
    """The version's similar lists in Redis, and a popular list naming it (as a worker that
    adopted it writes)."""
    write_similar_lists(redis_client, settings.key_prefix, version, 20)
    write_list(None, version.popular_items, model_version=version.version_id)
    return version


def neighbours(version: ModelVersion, item: str, n: int) -> list[str]:
    ids, _ = similar_items(version.item_factors, 20)
    names = version.item_ids.ids
    return [names[j] for j in ids[names.index(item)]][:n]


def ids(body: dict[str, Any]) -> list[str]:
    return [i["item"] for i in body["items"]]


async def test_similar_serves_the_stored_neighbours_with_scores(
    api_client: ApiClient, published: ModelVersion
) -> None:
    item = published.item_ids.ids[3]
    async with api_client() as client:
        answer = await client.get(f"/similar/{item}?k=5")
        body = await answer.json()
    assert answer.status == 200, body
    assert (body["item"], body["source"], body["model_version"]) == (
        item,
        "similar",
        published.version_id,
    )
    assert ids(body) == neighbours(published, item, 5)
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)


async def test_similar_leaves_out_taken_down_items_and_keeps_k(
    api_client: ApiClient, published: ModelVersion, redis_client: Any, settings: Settings
) -> None:
    item = published.item_ids.ids[0]
    first, second = neighbours(published, item, 2)
    redis_client.hset(takedown_key(settings.key_prefix), DATA_FIELD, encode_takedown(1, {first}))
    async with api_client() as client:
        body = await (await client.get(f"/similar/{item}?k=5")).json()
    assert first not in ids(body) and ids(body)[0] == second and len(body["items"]) == 5


async def test_an_unknown_item_is_a_404_or_the_popular_list_of_its_tags(
    api_client: ApiClient, published: ModelVersion, redis_client: Any, settings: Settings
) -> None:
    tagged = published.popular_items[2]
    redis_client.hset(
        items_hash_key(settings.key_prefix),
        mapping={
            "new-film": encode_record(ItemRecord("new-film", 1, "New", ("war",))),
            tagged: encode_record(ItemRecord(tagged, 1, "Old", ("war",))),
        },
    )
    redis_client.hset(takedown_key(settings.key_prefix), DATA_FIELD, encode_takedown(5, set()))
    async with api_client() as client:
        missing = await client.get("/similar/nobody-knows?k=3")
        assert missing.status == 404
        assert (await missing.json())["error"]["code"] == "unknown_item"
        await client.get("/recs/someone")  # reads the takedown value: the catalog loads
        for _ in range(100):
            answer = await client.get("/similar/new-film?k=3")
            if answer.status == 200:
                break
            await asyncio.sleep(0.05)
        body = await answer.json()
    assert answer.status == 200, body
    assert body["source"] == "popular" and ids(body) == [tagged]


async def test_session_lists_leave_the_given_items_out_and_ignore_their_order(
    api_client: ApiClient, published: ModelVersion
) -> None:
    given = list(published.item_ids.ids[5:8])
    async with api_client() as client:
        bodies = []
        for order in itertools.permutations(given):
            answer = await client.post("/recs?k=8", json={"items": list(order)})
            assert answer.status == 200
            bodies.append(await answer.json())
    assert all(b == bodies[0] for b in bodies)
    body = bodies[0]
    assert body["source"] == "session" and body["given"] == sorted(given)
    assert len(body["items"]) == 8 and not set(ids(body)) & set(given)
    assert all(i["because"] in given for i in body["items"])
    # an item close to one of them ranks as that one's own neighbours do
    alone = neighbours(published, given[0], 20)
    assert ids(body)[0] in alone + neighbours(published, given[1], 20) + neighbours(
        published, given[2], 20
    )


async def test_a_session_of_unknown_items_gets_the_popular_list_without_them(
    api_client: ApiClient, published: ModelVersion
) -> None:
    async with api_client() as client:
        top = published.popular_items[0]
        body = await (await client.post("/recs?k=3", json={"items": ["zz-1", top]})).json()
    # top is known: the session answer; now only unknown items
    assert top not in ids(body)
    async with api_client() as client:
        body = await (await client.post("/recs?k=3", json={"items": ["zz-1"]})).json()
    assert body["source"] == "popular" and ids(body) == published.popular_items[:3]


@pytest.mark.parametrize(
    ("body", "status"),
    [({"items": []}, 400), ({"items": ["bad id"]}, 400), ({"items": [1]}, 400), ([], 400)],
)
async def test_bad_session_bodies_are_a_400(
    api_client: ApiClient, published: ModelVersion, body: Any, status: int
) -> None:
    async with api_client() as client:
        answer = await client.post("/recs", json=body)
        assert answer.status == status, await answer.text()


async def test_the_catalog_lists_items_by_id_a_page_at_a_time_with_tags(
    api_client: ApiClient, redis_client: Any, settings: Settings
) -> None:
    records = {
        f"m{n}": ItemRecord(f"m{n}", 1, f"Film {n}", ("war",) if n % 2 else ("drama",), n != 3)
        for n in range(5)
    }
    redis_client.hset(
        items_hash_key(settings.key_prefix),
        mapping={i: encode_record(r) for i, r in records.items()},
    )
    redis_client.hset(takedown_key(settings.key_prefix), DATA_FIELD, encode_takedown(9, {"m3"}))
    async with api_client() as client:
        await client.get("/recs/someone")  # reads the takedown value: the catalog loads
        for _ in range(100):
            body = await (await client.get("/items?limit=2")).json()
            if body["items"]:
                break
            await asyncio.sleep(0.05)
        assert [i["item"] for i in body["items"]] == ["m0", "m1"] and body["next"] == "m1"
        rest = await (await client.get("/items?limit=10&after=m1")).json()
        war = await (await client.get("/items?tags=war")).json()
        bad = await client.get("/items?limit=0")
    assert [i["item"] for i in rest["items"]] == ["m2", "m3", "m4"] and rest["next"] is None
    assert rest["items"][1] == {
        "item": "m3",
        "title": "Film 3",
        "tags": ["war"],
        "available": False,
    }
    assert [i["item"] for i in war["items"]] == ["m1", "m3"]
    assert bad.status == 400
