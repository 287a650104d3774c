"""GET /recs/{user} against the real redis-server: personal, fallback, k, exclude, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from yarl import URL

from freshrec.settings import Settings
from schemas.recent import RECENT_FIELD, RecentItem, encode_history
from schemas.recent import encode as encode_recent
from schemas.recs import DATA_FIELD, RecItem, RecList, decode_items, items_key, user_key
from serving.context import API
from serving.metrics import REDIS_ERRORS
from tests.serving.conftest import ApiClient, ListWriter, encode_compact

pytestmark = pytest.mark.integration

ITEMS = [f"i{n}" for n in range(150)]
#: Run a test with the list stored as JSON (older workers, lists made without a model)
#: and in the compact format (the worker's lists with a model): both are served alike.
BOTH_FORMATS = pytest.mark.parametrize("compact", [False, True], ids=["json", "compact"])


def item_ids(body: dict[str, Any]) -> list[str]:
    return [entry["item"] for entry in body["items"]]


def corrupt_count() -> float:
    """Unreadable lists the API skipped so far (the ``corrupt`` Redis error count)."""
    return float(REDIS_ERRORS.labels("corrupt")._value.get())


@BOTH_FORMATS
async def test_personal_list_is_served_cut_to_k(
    api_client: ApiClient, write_list: ListWriter, compact: bool
) -> None:
    stored = write_list(
        "alice",
        ITEMS,
        model_version="20260101T000000-ab",
        updated_at=1_700_000_123_456,
        compact=compact,
    )
    async with api_client() as client:
        resp = await client.get("/recs/alice", params={"k": "3"})
        body = await resp.json()
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert body == {
        "user": "alice",
        "source": "personal",
        "model_version": "20260101T000000-ab",
        "updated_at": 1_700_000_123_456,
        "written_at": stored.written_at,
        "variant": "current",
        "items": [
            {"item": "i0", "score": 150.0},
            {"item": "i1", "score": 149.0},
            {"item": "i2", "score": 148.0},
        ],
    }


async def test_default_k_comes_from_settings(api_client: ApiClient, write_list: ListWriter) -> None:
    write_list("alice", ITEMS)
    async with api_client(api_default_k=7) as client:
        body = await (await client.get("/recs/alice")).json()
    assert item_ids(body) == ITEMS[:7]


async def test_k_at_the_maximum_is_served(api_client: ApiClient, write_list: ListWriter) -> None:
    write_list("alice", ITEMS)
    async with api_client() as client:
        body = await (await client.get("/recs/alice", params={"k": "100"})).json()
    assert item_ids(body) == ITEMS[:100]


@BOTH_FORMATS
async def test_short_list_returns_what_there_is(
    api_client: ApiClient, write_list: ListWriter, compact: bool
) -> None:
    write_list("alice", ["a", "b"], compact=compact)
    async with api_client() as client:
        body = await (await client.get("/recs/alice", params={"k": "10"})).json()
    assert item_ids(body) == ["a", "b"]


async def test_user_without_list_gets_popular_fallback(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    write_list(None, ["p1", "p2", "p3"], model_version="v9")
    write_list("alice", ["a1"])
    async with api_client() as client:
        resp = await client.get("/recs/bob", params={"k": "2"})
        body = await resp.json()
    assert resp.status == 200
    assert (body["user"], body["source"], body["model_version"]) == ("bob", "popular", "v9")
    assert item_ids(body) == ["p1", "p2"]


@pytest.mark.parametrize("compact", [False, True])
async def test_popular_scores_share_the_personal_scale(
    api_client: ApiClient, write_list: ListWriter, compact: bool
) -> None:
    """Issue 26, item 9: popular answers carried raw counts (566.0) beside personal scores of
    0.x; both sources now score from 0 to about 1, the most popular item 1, with exclusions
    too."""
    write_list(None, ["p1", "p2", "p3", "p4"], model_version="v9", compact=compact)
    write_list("dora", ["p1", "p2"], source="popular", compact=compact)
    async with api_client() as client:
        fallback = await (await client.get("/recs/bob")).json()
        excluded = await (await client.get("/recs/bob", params={"exclude": "p1"})).json()
        dora = await (await client.get("/recs/dora")).json()
    assert [i["score"] for i in fallback["items"]] == [1.0, 0.75, 0.5, 0.25]
    assert [i["score"] for i in excluded["items"]] == [0.75, 0.5, 0.25]
    assert [i["score"] for i in dora["items"]] == [1.0, 0.5]


async def test_a_users_popular_list_is_served_as_popular_not_personal(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    """Issue 13.6: the API labelled every stored user list ``personal``, also the popularity
    lists the worker writes before any model exists or for a user the model does not know."""
    write_list("alice", ["p1", "p2"], source="popular", model_version=None)
    write_list("carol", ["p2", "p1"], source="popular", model_version="v3")
    async with api_client() as client:
        alice = await (await client.get("/recs/alice")).json()
        carol = await (await client.get("/recs/carol")).json()
    assert (alice["source"], alice["model_version"], item_ids(alice)) == (
        "popular",
        None,
        ["p1", "p2"],
    )
    assert (carol["source"], carol["model_version"]) == ("popular", "v3")


async def test_missing_popular_list_is_not_cached(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    """Issue 13.11: right after the worker started, the API kept answering an empty list for
    FRESHREC_API_POPULAR_CACHE_S because it had cached the popular list's absence."""
    async with api_client(api_popular_cache_s=3600.0) as client:
        assert item_ids(await (await client.get("/recs/bob")).json()) == []
        write_list(None, ["p1"])
        assert item_ids(await (await client.get("/recs/bob")).json()) == ["p1"]


async def test_no_list_at_all_is_an_empty_popular_answer_not_an_error(
    api_client: ApiClient,
) -> None:
    async with api_client() as client:
        resp = await client.get("/recs/nobody")
        body = await resp.json()
    assert resp.status == 200
    assert body == {
        "user": "nobody",
        "source": "popular",
        "model_version": None,
        "updated_at": None,
        "written_at": None,
        "variant": "current",
        "items": [],
    }


@BOTH_FORMATS
async def test_exclude_replaces_items_from_further_down_the_list(
    api_client: ApiClient, write_list: ListWriter, compact: bool
) -> None:
    write_list("alice", ITEMS, compact=compact)
    async with api_client() as client:
        comma = await (await client.get("/recs/alice?k=3&exclude=i0,i2")).json()
        repeated = await (await client.get("/recs/alice?k=3&exclude=i0&exclude=i2,")).json()
    assert item_ids(comma) == ["i1", "i3", "i4"]
    assert item_ids(repeated) == ["i1", "i3", "i4"]


async def test_exclude_applies_to_the_fallback_too(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    write_list(None, ["p1", "p2", "p3"])
    async with api_client() as client:
        body = await (await client.get("/recs/bob?k=2&exclude=p1")).json()
    assert item_ids(body) == ["p2", "p3"]


@BOTH_FORMATS
async def test_explanations_are_passed_through(
    api_client: ApiClient, write_list: ListWriter, compact: bool
) -> None:
    write_list("alice", ["a", "b"], because={"a": "seen-1"}, compact=compact)
    async with api_client() as client:
        body = await (await client.get("/recs/alice")).json()
    assert body["items"] == [
        {"item": "a", "score": 2.0, "because": "seen-1"},
        {"item": "b", "score": 1.0},
    ]


@pytest.mark.parametrize(
    "k", ["0", "101", "-1", "abc", "1.5", " 5", "+5", "1_0", "\u0667", "", "99999999999"]
)
async def test_bad_k_is_a_400_that_names_the_bounds(
    api_client: ApiClient, write_list: ListWriter, k: str
) -> None:
    write_list("alice", ITEMS)
    async with api_client() as client:
        resp = await client.get("/recs/alice", params={"k": k})
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "bad_k"
    assert "from 1 to 100" in body["error"]["message"]


async def test_k_given_twice_is_a_400(api_client: ApiClient) -> None:
    async with api_client() as client:
        resp = await client.get("/recs/alice?k=1&k=2")
        body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (400, "bad_k")


async def test_k_bound_follows_the_setting(api_client: ApiClient, write_list: ListWriter) -> None:
    write_list("alice", ITEMS)
    async with api_client(api_max_k=5, api_default_k=5) as client:
        ok = await client.get("/recs/alice", params={"k": "5"})
        too_big = await client.get("/recs/alice", params={"k": "6"})
        assert "from 1 to 5" in (await too_big.json())["error"]["message"]
    assert (ok.status, too_big.status) == (200, 400)


@pytest.mark.parametrize(
    "user",
    ["a" * 65, "has space", "semi;colon", "caf%C3%A9", "new%0Aline", "trailing%0A", "slash%2Fin"],
)
async def test_user_id_outside_the_contract_is_a_400(api_client: ApiClient, user: str) -> None:
    async with api_client() as client:
        resp = await client.get(f"/recs/{user}")
        body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["code"] == "bad_user"
    assert "1-64 characters" in body["error"]["message"]


async def test_user_id_at_the_contract_limits_is_accepted(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    longest = "U" * 64
    odd = "a.b_c:d@e-f"
    write_list(longest, ["x"])
    write_list(odd, ["y"])
    async with api_client() as client:
        first = await (await client.get(f"/recs/{longest}")).json()
        second = await (await client.get(f"/recs/{odd}")).json()
    assert (first["source"], item_ids(first)) == ("personal", ["x"])
    assert (second["source"], item_ids(second)) == ("personal", ["y"])


async def test_bad_exclude_id_is_a_400(api_client: ApiClient) -> None:
    async with api_client() as client:
        resp = await client.get("/recs/alice", params={"exclude": "ok,not ok"})
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "bad_exclude"
    assert "'not ok'" in body["error"]["message"]


@pytest.mark.parametrize(
    "garbage",
    [b"not json", b"[]", b'{"items": 3}', b'{"items": [{"item": 1, "score": 1}]}', b"{}"],
)
async def test_unreadable_list_falls_back_to_popular_and_is_counted(
    api_client: ApiClient,
    write_list: ListWriter,
    redis_client: Any,
    settings: Settings,
    garbage: bytes,
) -> None:
    from serving.metrics import REDIS_ERRORS

    write_list(None, ["p1"])
    redis_client.hset(user_key(settings.key_prefix, "alice"), DATA_FIELD, garbage)
    before = REDIS_ERRORS.labels("corrupt")._value.get()
    async with api_client() as client:
        resp = await client.get("/recs/alice")
        body = await resp.json()
    assert resp.status == 200
    assert (body["source"], item_ids(body)) == ("popular", ["p1"])
    assert REDIS_ERRORS.labels("corrupt")._value.get() == before + 1


async def test_key_of_the_wrong_type_falls_back(
    api_client: ApiClient, write_list: ListWriter, redis_client: Any, settings: Settings
) -> None:
    write_list(None, ["p1"])
    redis_client.set(user_key(settings.key_prefix, "alice"), "a string, not a hash")
    async with api_client() as client:
        body = await (await client.get("/recs/alice")).json()
    assert (body["source"], item_ids(body)) == ("popular", ["p1"])


async def test_popular_list_is_cached_for_the_configured_time(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    write_list(None, ["old"])
    async with (
        api_client(api_popular_cache_s=3600.0) as cached,
        api_client(api_popular_cache_s=0.0) as uncached,
    ):
        assert item_ids(await (await cached.get("/recs/bob")).json()) == ["old"]
        write_list(None, ["new"])
        assert item_ids(await (await cached.get("/recs/bob")).json()) == ["old"]
        assert item_ids(await (await uncached.get("/recs/bob")).json()) == ["new"]


async def test_personal_list_is_never_cached(api_client: ApiClient, write_list: ListWriter) -> None:
    write_list("alice", ["first"])
    async with api_client() as client:
        assert item_ids(await (await client.get("/recs/alice")).json()) == ["first"]
        write_list("alice", ["second"])
        assert item_ids(await (await client.get("/recs/alice")).json()) == ["second"]


async def test_unknown_route_and_method_are_json_errors(api_client: ApiClient) -> None:
    async with api_client() as client:
        missing = await client.get("/nowhere")
        wrong = await client.post("/recs/alice")
        get_session = await client.get("/recs")  # POST /recs is the session list
        missing_body, wrong_body = await missing.json(), await wrong.json()
    assert get_session.status == 405 and get_session.headers["Allow"] == "POST"
    assert missing.status == 404
    assert missing_body["error"]["code"] == "not_found"
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "GET,HEAD"
    assert wrong_body["error"]["code"] == "method_not_allowed"


async def test_a_bug_is_a_bare_500_without_the_traceback(
    api_client: ApiClient, write_list: ListWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.recs

    def broken(*args: object) -> bytes:
        raise RuntimeError("secret internal detail")

    write_list("alice", ["a"])
    monkeypatch.setattr(serving.recs, "render", broken)
    async with api_client() as client:
        resp = await client.get("/recs/alice")
        text = await resp.text()
    assert resp.status == 500
    assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert '"code":"internal"' in text


async def test_unknown_query_parameter_is_a_400(api_client: ApiClient) -> None:
    async with api_client() as client:
        resp = await client.get("/recs/alice", params={"k": "3", "exlude": "i0"})
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "bad_query"
    assert "'exlude'" in body["error"]["message"]


@pytest.mark.parametrize(
    ("raw_query", "status", "served"),
    [
        ("k=%33", 200, 3),  # percent-escaped digits: still k=3
        ("k=03", 200, 3),
        ("%6B=2", 200, 2),  # an escaped name
        ("k%3D3", 400, None),  # one parameter named "k=3", not k=3
        ("k=3%26exclude=i0", 400, None),  # k = "3&exclude=i0"
    ],
)
async def test_raw_query_strings_mean_what_a_full_parse_says(
    api_client: ApiClient, write_list: ListWriter, raw_query: str, status: int, served: int | None
) -> None:
    """The fast path for a bare ``k=<digits>`` (recs.handle_recs) must agree with the full parse."""
    write_list("alice", ITEMS)
    async with api_client() as client:
        url = URL(f"{client.make_url('/recs/alice')}?{raw_query}", encoded=True)
        async with client.session.get(url) as resp:
            body = await resp.json()
    assert resp.status == status
    if served is not None:
        assert item_ids(body) == ITEMS[:served]


async def test_a_json_list_and_a_compact_one_are_served_alike(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    # The rollout of the compact format: lists older workers wrote as JSON stay in
    # Redis beside the new ones until rewritten, and must be served as before.
    items = [f"i{n}" for n in range(150)]
    because = {item: f"seen-{n % 7}" for n, item in enumerate(items) if n % 3}
    old = write_list("old", items, because=because)
    new = write_list("new", items, because=because, compact=True)
    assert old.items == new.items
    async with api_client() as client:
        for query in ({"k": "20"}, {"k": "5", "exclude": ["i1", "i3", "nope"]}):
            bodies = [
                await (await client.get(f"/recs/{user}", params=query)).json()
                for user in ("old", "new")
            ]
            for body in bodies:
                assert body.pop("user") in ("old", "new")
                assert body["source"] == "personal"
            json_body, compact_body = bodies
            assert [{**i, "score": None} for i in json_body["items"]] == [
                {**i, "score": None} for i in compact_body["items"]
            ]
            assert [np.float16(i["score"]) for i in json_body["items"]] == [
                np.float16(i["score"]) for i in compact_body["items"]
            ]
            assert {**json_body, "items": None} == {**compact_body, "items": None}


async def test_float16_scores_are_served_as_short_decimals(
    api_client: ApiClient, write_list: ListWriter, redis_client: Any, settings: Settings
) -> None:
    write_list("alice", ["a", "b"], compact=True)  # the table
    recs = RecList("alice", "personal", "v1", 5, 6, (RecItem("a", 0.835), RecItem("b", 0.1)))
    table = decode_items(redis_client.get(items_key(settings.key_prefix, "v1")))
    redis_client.hset(
        user_key(settings.key_prefix, "alice"), DATA_FIELD, encode_compact(recs, table)
    )
    async with api_client() as client:
        body = await (await client.get("/recs/alice")).read()
    assert b'"score":0.835' in body and b'"score":0.1' in body


async def test_a_compact_list_whose_item_table_is_missing_falls_back_until_it_is_written(
    api_client: ApiClient, write_list: ListWriter, redis_client: Any, settings: Settings
) -> None:
    # A Redis that lost its data gets the lists again after the table (the worker
    # writes the table first), but a list written in between must not break the API,
    # nor may the missing table be remembered.
    write_list(None, ["p1"])
    write_list("alice", ["a", "b"], compact=True)
    table_key = items_key(settings.key_prefix, "v1")
    table = redis_client.get(table_key)
    redis_client.delete(table_key)
    async with api_client() as client:
        before = corrupt_count()
        body = await (await client.get("/recs/alice")).json()
        assert (body["source"], item_ids(body)) == ("popular", ["p1"])
        assert corrupt_count() == before + 1
        redis_client.set(table_key, table)
        body = await (await client.get("/recs/alice")).json()
        assert (body["source"], item_ids(body)) == ("personal", ["a", "b"])


async def test_the_item_table_is_read_once_per_version(
    api_client: ApiClient, write_list: ListWriter, redis_client: Any
) -> None:
    users = [f"u{n}" for n in range(20)]
    for user in users:
        write_list(user, ["a", "b", user], compact=True)

    def gets() -> int:
        return int(redis_client.info("commandstats").get("cmdstat_get", {}).get("calls", 0))

    async with api_client() as client:
        before = gets()
        first = await asyncio.gather(*(client.get(f"/recs/{user}") for user in users))
        again = await asyncio.gather(*(client.get(f"/recs/{user}") for user in users))
        bodies = [await r.json() for r in first + again]
    assert gets() == before + 1
    assert [item_ids(b)[-1] for b in bodies] == users + users


async def test_a_new_items_entry_says_where_its_vector_comes_from(
    api_client: ApiClient, redis_client: Any, settings: Settings
) -> None:
    """Issue 23: a list's entry of an item the model does not know carries its vector's
    source (``fold``, ``content``), and the answer keeps it; an unknown source is a
    corrupt list (skipped for the popular fallback), not passed on."""
    import orjson

    doc: dict[str, Any] = {
        "user": "alice",
        "source": "personal",
        "model_version": "v1",
        "updated_at": 1,
        "written_at": 2,
        "variant": "current",
        "items": [
            {"item": "a", "score": 0.9, "because": "b"},
            {"item": "n1", "score": 0.8, "source": "content"},
            {"item": "n2", "score": 0.7, "source": "fold"},
        ],
    }
    key = user_key(settings.key_prefix, "alice")
    redis_client.hset(key, DATA_FIELD, orjson.dumps(doc))
    async with api_client() as client:
        body = await (await client.get("/recs/alice")).json()
        assert body["items"] == doc["items"]
        doc["items"][1]["source"] = "guess"
        redis_client.hset(key, DATA_FIELD, orjson.dumps(doc))
        before = corrupt_count()
        body = await (await client.get("/recs/alice")).json()
    assert body["source"] == "popular" and corrupt_count() == before + 1


def _store_recent(redis_client: Any, settings: Settings, user: str, entries: list[Any]) -> None:
    redis_client.hset(user_key(settings.key_prefix, user), RECENT_FIELD, encode_recent(entries))


@BOTH_FORMATS
async def test_recent_history_is_served_beside_the_list_when_asked(
    api_client: ApiClient,
    write_list: ListWriter,
    redis_client: Any,
    settings: Settings,
    compact: bool,
) -> None:
    """Issue 26, item 8: the user's own newest items, from the list's hash, cut to n,
    titled with fields=title; without ``recent`` the answer is as before."""
    write_list("alice", ITEMS, compact=compact)
    entries = [RecentItem(f"h{n}", 1_700_000_000_000 - n, "watch") for n in range(10)]
    _store_recent(redis_client, settings, "alice", entries)
    async with api_client() as client:
        plain = await (await client.get("/recs/alice", params={"k": "2"})).json()
        resp = await client.get("/recs/alice", params={"k": "2", "recent": "3"})
        body = await resp.json()
        titled = await (
            await client.get("/recs/alice", params={"recent": "1", "fields": "title"})
        ).json()
        none = await (await client.get("/recs/alice", params={"recent": "0"})).json()
    assert resp.status == 200 and "recent" not in plain and "recent" not in none
    assert item_ids(body) == ["i0", "i1"] and body["source"] == "personal"
    assert body["recent"] == [
        {"item": "h0", "ts": 1_700_000_000_000, "kind": "watch"},
        {"item": "h1", "ts": 1_699_999_999_999, "kind": "watch"},
        {"item": "h2", "ts": 1_699_999_999_998, "kind": "watch"},
    ]
    assert titled["recent"] == [
        {"item": "h0", "ts": 1_700_000_000_000, "kind": "watch", "title": "h0"}
    ]


async def test_recent_history_of_a_user_without_a_list_is_empty(
    api_client: ApiClient, write_list: ListWriter
) -> None:
    write_list(None, ["p1"])
    async with api_client() as client:
        body = await (await client.get("/recs/nobody", params={"recent": "10"})).json()
    assert (body["source"], item_ids(body), body["recent"]) == ("popular", ["p1"], [])


async def test_an_unreadable_recent_history_is_counted_and_the_list_still_served(
    api_client: ApiClient, write_list: ListWriter, redis_client: Any, settings: Settings
) -> None:
    write_list("alice", ITEMS)
    redis_client.hset(user_key(settings.key_prefix, "alice"), RECENT_FIELD, b"{garbage")
    before = corrupt_count()
    async with api_client() as client:
        body = await (await client.get("/recs/alice", params={"k": "1", "recent": "5"})).json()
    assert (body["source"], item_ids(body), body["recent"]) == ("personal", ["i0"], [])
    assert corrupt_count() == before + 1


@pytest.mark.parametrize("raw", ["11", "-1", "x", "", "1.5"])
async def test_bad_recent_is_a_400_that_names_the_bounds(api_client: ApiClient, raw: str) -> None:
    async with api_client() as client:
        resp = await client.get("/recs/alice", params={"recent": raw})
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "bad_recent" and "0 to 10" in body["error"]["message"]


async def test_recent_is_not_a_parameter_of_the_similar_lists(api_client: ApiClient) -> None:
    async with api_client() as client:
        resp = await client.get("/similar/i1", params={"recent": "3"})
        body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_query"


async def test_the_workers_sink_writes_the_history_the_api_serves_in_one_round_trip(
    api_client: ApiClient, settings: Settings, redis_client: Any
) -> None:
    """Sink and API on the real redis-server: what the worker's script stores with the
    list is what ``?recent=`` answers, and the list and the history are read in one batch
    of the coalescer (one round trip)."""
    from freshrec.backoff import NoBackoff
    from freshrec.retry import RetryPolicy
    from schemas.recs import encode
    from schemas.state import Interaction
    from streams.lists import UserList
    from streams.sink import RedisSink

    history = [
        Interaction("m1", "watch", 60.0, 120.0, 1_000),
        Interaction("m2", "rate", 4.0, None, 2_000),
        Interaction("m1", "watch", 90.0, 120.0, 3_000),
    ]
    recs = RecList("carol", "personal", "v1", 3_000, 3_010, (RecItem("m9", 0.9),))
    sink = RedisSink(settings, RetryPolicy(NoBackoff(), max_attempts=1))
    try:
        listed = UserList("carol", recs.order, encode(recs), encode_history(history))
        assert await sink.write([listed]) == 1
    finally:
        await sink.close()
    async with api_client() as client:
        store = client.server.app[API].store
        batches: list[int] = []
        send = store.reader._send

        async def counted(batch: Any) -> None:
            batches.append(len(batch))
            await send(batch)

        store.reader._send = counted
        body = await (await client.get("/recs/carol", params={"recent": "10"})).json()
    assert item_ids(body) == ["m9"]
    assert body["recent"] == [
        {"item": "m1", "ts": 3_000, "kind": "watch"},
        {"item": "m2", "ts": 2_000, "kind": "rate"},
    ]
    assert batches == [2], "the list and its history travel in one batch"
