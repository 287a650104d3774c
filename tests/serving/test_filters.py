"""Serve-time filters: items taken down, ``?tags=`` and ``&exclude_tags=``, and the fill from
the popular list when fewer than ``k`` pass."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from freshrec.settings import Settings
from schemas.items import ItemRecord, encode_record, encode_takedown, items_hash_key, takedown_key
from schemas.recs import DATA_FIELD
from serving.params import TagFilter
from serving.store import CATALOG_RELOAD_S
from tests.serving.conftest import ApiClient, ListWriter

TAGS = ["drama", "crime", "comedy", "war"]


def set_catalog(
    client: Any,
    settings: Settings,
    tags: Mapping[str, tuple[str, ...]],
    revision: int,
    down: frozenset[str] = frozenset(),
) -> None:
    """The item table and takedown value as the worker's script leaves them."""
    key = items_hash_key(settings.key_prefix)
    client.delete(key)
    if tags:
        client.hset(
            key,
            mapping={
                i: encode_record(ItemRecord(i, 1, None, t, i not in down)) for i, t in tags.items()
            },
        )
    client.hset(takedown_key(settings.key_prefix), DATA_FIELD, encode_takedown(revision, down))


def ids(body: dict[str, Any]) -> list[str]:
    return [i["item"] for i in body["items"]]


async def until_catalog(client: Any, url: str, check: Any) -> dict[str, Any]:
    """GET ``url`` until ``check(body)`` holds: the item table is read in the background."""
    deadline = asyncio.get_running_loop().time() + 10 * CATALOG_RELOAD_S
    while True:
        body = await (await client.get(url)).json()
        if check(body) or asyncio.get_running_loop().time() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_taken_down_items_leave_every_list_and_the_list_keeps_k_items(
    api_client: ApiClient, write_list: ListWriter, redis_client: Any, settings: Settings
) -> None:
    write_list("alice", ["a", "x", "b", "c", "d"], compact=True)
    write_list(None, ["x", "p1", "p2"])
    set_catalog(redis_client, settings, {}, 1, frozenset({"x"}))
    async with api_client() as client:
        body = await (await client.get("/recs/alice?k=3")).json()
        assert ids(body) == ["a", "b", "c"]  # over-fetched: still k items
        fallback = await (await client.get("/recs/nobody?k=3")).json()
        assert ids(fallback) == ["p1", "p2"]
        set_catalog(redis_client, settings, {}, 2)  # available again
        body = await (await client.get("/recs/alice?k=3")).json()
        assert ids(body) == ["a", "x", "b"]


async def test_an_unreadable_takedown_value_keeps_the_last_set(
    api_client: ApiClient, write_list: ListWriter, redis_client: Any, settings: Settings
) -> None:
    """Never serve a taken-down item because the value got garbled."""
    write_list("alice", ["a", "x", "b"])
    set_catalog(redis_client, settings, {}, 1, frozenset({"x"}))
    async with api_client() as client:
        assert ids(await (await client.get("/recs/alice")).json()) == ["a", "b"]
        redis_client.hset(takedown_key(settings.key_prefix), DATA_FIELD, b"garbage")
        assert ids(await (await client.get("/recs/alice")).json()) == ["a", "b"]


async def test_fewer_than_k_passing_are_filled_from_the_popular_list_marked(
    api_client: ApiClient, write_list: ListWriter, redis_client: Any, settings: Settings
) -> None:
    write_list("alice", ["a", "b", "c"], compact=True)
    write_list(None, ["b", "p1", "p2", "p3"])
    tags = {
        "a": ("war",),
        "b": ("war",),
        "c": ("drama",),
        "p1": ("drama",),
        "p2": ("war",),
        "p3": ("war",),
    }
    set_catalog(redis_client, settings, tags, 1)
    async with api_client() as client:
        body = await until_catalog(
            client, "/recs/alice?k=4&tags=war", lambda b: len(b["items"]) == 4
        )
    assert ids(body) == ["a", "b", "p2", "p3"]
    assert [i.get("source") for i in body["items"]] == [None, None, "popular", "popular"]
    assert body["source"] == "personal" and body["filled"] == 2


async def test_bad_tags_are_a_400(api_client: ApiClient) -> None:
    async with api_client() as client:
        answer = await client.get("/recs/alice?tags=a%01b")
        assert answer.status == 400
        assert (await answer.json())["error"]["code"] == "bad_tags"


@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    items=st.lists(
        st.sampled_from([f"i{n}" for n in range(30)]), min_size=1, max_size=25, unique=True
    ),
    tagging=st.lists(st.sets(st.sampled_from(TAGS), max_size=2), min_size=30, max_size=30),
    any_of=st.sets(st.sampled_from(TAGS), max_size=2),
    none_of=st.sets(st.sampled_from(TAGS), max_size=2),
    down=st.sets(st.sampled_from([f"i{n}" for n in range(30)]), max_size=4),
    k=st.integers(1, 10),
    compact=st.booleans(),
)
def test_every_served_item_passes_the_filter_in_stored_order(
    api_client: ApiClient,
    write_list: ListWriter,
    redis_client: Any,
    settings: Settings,
    items: list[str],
    tagging: list[set[str]],
    any_of: set[str],
    none_of: set[str],
    down: set[str],
    k: int,
    compact: bool,
) -> None:
    tags = {f"i{n}": tuple(sorted(t)) for n, t in enumerate(tagging)}
    write_list("alice", items, compact=compact)
    write_list(None, [])
    revision = int.from_bytes(orjson.dumps(tags)[:6], "big") ^ hash(frozenset(down)) & 0xFFFFFF
    set_catalog(redis_client, settings, tags, revision, frozenset(down))
    rule = TagFilter(frozenset(any_of), frozenset(none_of))
    query = f"/recs/alice?k={k}"
    if any_of:
        query += "&tags=" + ",".join(sorted(any_of))
    if none_of:
        query += "&exclude_tags=" + ",".join(sorted(none_of))
    passing = [i for i in items if i not in down and rule.passes(tags[i])]

    async def run() -> dict[str, Any]:
        async with api_client() as client:
            return await until_catalog(client, query, lambda b: ids(b) == passing[:k])

    body = asyncio.run(run())
    served = ids(body)
    assert all(i not in down and rule.passes(tags[i]) for i in served)
    assert served == passing[:k]  # order kept, nothing that passes skipped
