"""The Redis writer against the real redis-server: compare-and-set, pipelines, deletes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis

from freshrec.backoff import NoBackoff
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from schemas.dead_letters import dead_letters_key, decode_tally
from schemas.online import OnlineCounts, decode_counts, online_key
from schemas.recent import RECENT_FIELD, RecentItem
from schemas.recent import decode as decode_recent
from schemas.recent import encode as encode_recent
from schemas.recs import (
    RecItem,
    RecList,
    decode,
    decode_items,
    encode,
    epoch_key,
    items_key,
    order_model_version,
    order_token,
    popular_key,
    user_key,
)
from streams.lists import UserList
from streams.sink import RedisSink

pytestmark = pytest.mark.integration

T = TypeVar("T")


def recs(user: str, updated_at: int, version: str | None, item: str = "a") -> UserList:
    data = RecList(user, "personal", version, updated_at, updated_at + 5, (RecItem(item, 1.0),))
    return UserList(user, data.order, encode(data))


def with_sink(settings: Settings, use: Callable[[RedisSink], Awaitable[T]]) -> T:
    """What ``use`` returns, run against a sink of ``settings`` (one attempt per call),
    closed after."""

    async def go() -> T:
        sink = RedisSink(settings, RetryPolicy(NoBackoff(), max_attempts=1))
        try:
            return await use(sink)
        finally:
            await sink.close()

    return asyncio.run(go())


def write(settings: Settings, lists: list[UserList], forget: tuple[str, ...] = ()) -> int:
    return with_sink(settings, lambda sink: sink.write(lists, forget))


def stored(client: redis.Redis, settings: Settings, user: str) -> RecList:
    raw = client.hget(user_key(settings.key_prefix, user), "data")
    assert raw is not None, f"no list stored for {user}"
    return decode(raw)


def test_an_older_list_never_replaces_a_newer_one(
    settings: Settings, redis_client: redis.Redis
) -> None:
    assert write(settings, [recs("u1", 200, "v1", "new")]) == 1
    # a replayed old batch, and a zombie with an older model for an older state
    assert write(settings, [recs("u1", 100, "v1", "old")]) == 0
    assert write(settings, [recs("u1", 100, "v9", "old")]) == 0
    assert stored(redis_client, settings, "u1").items[0].item == "new"


def test_same_events_with_a_newer_model_version_win(
    settings: Settings, redis_client: redis.Redis
) -> None:
    write(settings, [recs("u1", 200, "20260101T000000000000Z-aaaa", "v1")])
    assert write(settings, [recs("u1", 200, "20260102T000000000000Z-aaaa", "v2")]) == 1
    assert write(settings, [recs("u1", 200, "20260102T000000000000Z-aaaa", "v2b")]) == 1
    assert stored(redis_client, settings, "u1").items[0].item == "v2b"


def test_one_pipeline_writes_many_and_deletes_forgotten(
    settings: Settings, redis_client: redis.Redis
) -> None:
    write(settings, [recs("gone", 1, None)])
    n = write(settings, [recs(f"u{i}", 10 + i, "v") for i in range(50)], forget=("gone",))
    assert n == 50
    assert redis_client.exists(user_key(settings.key_prefix, "gone")) == 0
    assert stored(redis_client, settings, "u49").updated_at == 59


def test_a_redis_that_lost_its_scripts_gets_the_script_again(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """The sink sends EVALSHA itself; after a restart Redis answers NOSCRIPT."""

    async def go(sink: RedisSink) -> tuple[int, int]:
        first = await sink.write([recs("u1", 100, "v1", "old")])
        redis_client.script_flush()
        return first, await sink.write([recs("u1", 200, "v1", "new"), recs("u2", 1, "v1")])

    assert with_sink(settings, go) == (1, 2)
    assert stored(redis_client, settings, "u1").items[0].item == "new"


def test_stored_orders_name_each_lists_model_and_none_for_a_missing_list(
    settings: Settings,
) -> None:
    write(settings, [recs("u1", 200, "v1"), recs("u2", 300, None)])

    orders = with_sink(settings, lambda sink: sink.stored_orders(["u1", "u2", "nobody"]))
    assert orders == [order_token(200, "v1"), order_token(300, None), None]
    assert [order_model_version(o) for o in orders[:2] if o is not None] == ["v1", None]


def test_popular_list_goes_to_its_own_key(settings: Settings, redis_client: redis.Redis) -> None:
    popular = RecList(None, "popular", "v1", 0, 1, (RecItem("p", 3.0),))
    assert with_sink(settings, lambda sink: sink.write_popular(popular))
    raw = redis_client.hget(popular_key(settings.key_prefix), "data")
    assert raw is not None and decode(raw).source == "popular"


def test_an_item_table_is_sent_only_to_a_redis_that_lacks_it(
    settings: Settings, redis_client: redis.Redis
) -> None:
    def write_items(ids: list[str]) -> bool:
        return with_sink(settings, lambda sink: sink.write_items("v1", ids))

    key = items_key(settings.key_prefix, "v1")
    assert write_items(["a", "b"])
    assert not write_items(["a", "b"])  # a version's items never change
    redis_client.delete(key)  # as a Redis that lost its data
    assert write_items(["a", "b"])
    raw = redis_client.get(key)
    assert raw is not None and decode_items(raw) == ["a", "b"]


def test_the_epoch_is_stored_once_and_replaced_only_after_it_is_gone(
    settings: Settings, redis_client: redis.Redis
) -> None:
    def epochs(n: int) -> list[tuple[str, bool]]:
        async def read(sink: RedisSink) -> list[tuple[str, bool]]:
            return [await sink.epoch() for _ in range(n)]

        return with_sink(settings, read)

    (first, stored), (again, stored_again) = epochs(2)
    assert stored and (again, stored_again) == (first, False)
    assert redis_client.get(epoch_key(settings.key_prefix)) == first.encode()

    redis_client.delete(epoch_key(settings.key_prefix))  # as a Redis restarted empty
    ((new, stored_new),) = epochs(1)
    assert stored_new and new != first


def test_unreachable_redis_is_a_transient_error_after_the_policy_gives_up(
    settings: Settings,
) -> None:
    from freshrec.errors import TransientError
    from freshrec.stack import free_port

    dead = settings.replace(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_retries=0)
    with pytest.raises(TransientError, match="redis write failed"):
        write(dead, [recs("u1", 1, None)])


def test_waiting_for_replicas_holds_a_primary_to_those_it_has(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """A replica promoted after its primary's death has no replica of its own: the worker
    stopped with exit 75 there (``WAIT 1`` answered 0 at every retry) until the first
    cluster test's primary came back. The session's Redis has no replica either."""
    waiting = settings.replace(redis_wait_replicas=1, redis_socket_timeout_s=0.2)
    assert write(waiting, [recs("u1", 200, "v1", "new")], forget=("gone",)) == 1
    assert stored(redis_client, settings, "u1").items[0].item == "new"


def test_counts_ride_with_the_lists_and_a_noscript_resend_adds_them_once(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Issue 24: the online counts and dead-letter tally go in the lists' pipeline; a
    server without the list script runs the rest of that pipeline all the same, so the
    resend must leave them out (the first batch after every Redis restart counted twice)."""
    redis_client.script_flush()
    online = {("v1", "current"): OnlineCounts(3, 1, 2, 0.75, 1, 4.5, 20)}
    written = with_sink(
        settings,
        lambda sink: sink.write([recs("u1", 100, "v1")], (), online, {"ts/minimum": 2}),
    )
    assert written == 1
    p = settings.key_prefix
    counts = decode_counts(redis_client.hgetall(online_key(p, "v1", "current")))
    assert counts == OnlineCounts(3, 1, 2, 0.75, 1, 4.5, 20)
    assert decode_tally(redis_client.hgetall(dead_letters_key(p))) == {"ts/minimum": 2}
    got = with_sink(settings, lambda sink: sink.online_counts([("v1", "current"), ("v2", "x")]))
    assert got == [counts, OnlineCounts()]


def test_the_users_recent_history_is_written_with_the_list_and_never_rolled_back(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Issue 26, item 8: the page shows the user's own history beside the list; it rides in
    the list's compare-and-set, so an older list's batch cannot bring back an older one."""
    newer = encode_recent([RecentItem("b", 200, "watch"), RecentItem("a", 100, "watch")])
    older = encode_recent([RecentItem("a", 100, "watch")])
    listed = recs("u1", 200, "v1", "new")
    assert write(settings, [UserList(listed.user, listed.order, listed.data, newer)]) == 1
    replayed = recs("u1", 100, "v1", "old")
    assert write(settings, [UserList(replayed.user, replayed.order, replayed.data, older)]) == 0
    key = user_key(settings.key_prefix, "u1")
    assert decode_recent(redis_client.hget(key, RECENT_FIELD)) == decode_recent(newer)
    # a list without a history (the popular fallback's shape) leaves the field alone
    assert write(settings, [recs("u1", 300, "v1", "newest")]) == 1
    assert decode_recent(redis_client.hget(key, RECENT_FIELD))[0]["item"] == "b"
    with_sink(settings, lambda sink: sink.write_popular(decode(encode(stored_list("p")))))
    assert redis_client.hget(popular_key(settings.key_prefix), RECENT_FIELD) is None


def stored_list(item: str) -> RecList:
    return RecList(None, "popular", None, 1, 2, (RecItem(item, 1.0),))
