"""``freshrec.client`` against the real API (in a thread, on the session's Redis and broker).

Issue 26, item 10: there was no client library; every back-end hand-rolled HTTP
and guessed the error shapes. The sync and asyncio clients are checked alike
on each behaviour; the routes they call are checked against the OpenAPI
document, the API's contract.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from freshrec.client import (
    ROUTES,
    ApiError,
    AsyncClient,
    Client,
    EventsAnswer,
    RecentItem,
    Recommendation,
    Recommendations,
    parse_recs,
)
from freshrec.errors import TransientError
from freshrec.settings import Settings
from freshrec.stack import RedisProcess, free_port
from schemas.recent import RECENT_FIELD
from schemas.recent import RecentItem as RecentEntry
from schemas.recent import encode as encode_recent
from schemas.recs import DATA_FIELD, encode, user_key
from tests.serving.conftest import ListWriter, live_api, make_list, own_redis, write_list
from tests.streams.worker import rate, watch

__all__ = ["own_redis", "write_list"]  # fixtures, used by name

pytestmark = pytest.mark.integration

NOW = 1_763_870_000_000
OPENAPI = Path(__file__).parents[2] / "serving" / "openapi.json"

#: One call made through either client: (client kind, what to call) -> its answer.
Call = Callable[[Any], Any]


def through(kind: str, url: str, call: Call, **options: Any) -> Any:
    """``call(client)`` with the sync client, or awaited with the asyncio one."""
    if kind == "sync":
        return call(Client(url, **options))

    async def run() -> Any:
        async with AsyncClient(url, **options) as api:
            return await call(api)

    return asyncio.run(run())


KINDS = pytest.mark.parametrize("kind", ["sync", "async"])


def test_every_route_the_client_calls_is_in_the_openapi_document() -> None:
    paths = json.loads(OPENAPI.read_text())["paths"]
    for method, path in ROUTES.values():
        assert path in paths, f"{path} is not in serving/openapi.json"
        assert method.lower() in paths[path], f"{method} {path} is not in serving/openapi.json"


@KINDS
def test_recs_are_typed(kind: str, settings: Settings, write_list: ListWriter) -> None:
    write_list("al.ice", ["a", "b", "c"], because={"a": "seen"})
    with live_api(settings) as api:
        recs = through(kind, api.url, lambda c: c.recs("al.ice", 2, exclude=["b"]))
        titled = through(kind, api.url, lambda c: c.recs("al.ice", 1, fields=["title", "tags"]))
    assert isinstance(recs, Recommendations)
    assert (recs.user, recs.source, recs.model_version) == ("al.ice", "personal", "v1")
    assert recs.items == (Recommendation("a", 3.0, "seen"), Recommendation("c", 1.0))
    assert (titled.items[0].title, titled.items[0].because_title, titled.items[0].tags) == (
        "a",
        "seen",
        (),
    )
    assert recs.recent is None  # not asked for


@KINDS
def test_the_users_recent_history_is_typed(
    kind: str, settings: Settings, write_list: ListWriter, redis_client: Any
) -> None:
    """Issue 26, item 8: ``recent=n`` returns the user's own newest items with the list."""
    write_list("bob", ["a", "b"])
    redis_client.hset(
        user_key(settings.key_prefix, "bob"),
        RECENT_FIELD,
        encode_recent([RecentEntry("m2", NOW, "rate"), RecentEntry("m1", NOW - 1, "watch")]),
    )
    with live_api(settings) as api:
        recs = through(kind, api.url, lambda c: c.recs("bob", 1, recent=5, fields=["title"]))
        nobody = through(kind, api.url, lambda c: c.recs("nobody", recent=5))
    assert recs.recent == (
        RecentItem("m2", NOW, "rate", "m2"),
        RecentItem("m1", NOW - 1, "watch", "m1"),
    )
    assert [i.item for i in recs.items] == ["a"]
    assert nobody.recent == ()


@KINDS
def test_events_are_posted_and_each_outcome_typed(
    kind: str, settings: Settings, topics: list[str]
) -> None:
    batch = [watch("c1", "alice", "m1", NOW), rate("c2", "alice", "m2", NOW, rating=7)]
    with live_api(settings) as api:
        answer = through(kind, api.url, lambda c: c.post_events(batch))
    assert isinstance(answer, EventsAnswer)
    assert (answer.accepted, answer.rejected) == (1, 1)
    assert (answer.results[0].status, answer.results[0].event_id) == ("accepted", "c1")
    assert (answer.results[1].status, answer.results[1].field) == ("rejected", "rating")


@KINDS
def test_api_errors_are_exceptions_with_code_and_message(kind: str, settings: Settings) -> None:
    bad = [rate("c3", "alice", "m2", NOW, rating=7)]
    with live_api(settings, api_token="s3cret") as api:
        with pytest.raises(ApiError) as unauthorized:
            through(kind, api.url, lambda c: c.recs("alice"))
        with pytest.raises(ApiError) as bad_k:
            through(kind, api.url, lambda c: c.recs("alice", 0), token="s3cret")
        with pytest.raises(ApiError) as none_valid:
            through(kind, api.url, lambda c: c.post_events(bad), token="s3cret")
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
    assert (bad_k.value.status, bad_k.value.code) == (400, "bad_k")
    assert "k" in bad_k.value.message
    assert (none_valid.value.status, none_valid.value.code) == (400, "no_valid_events")
    assert none_valid.value.body["results"][0]["field"] == "rating"


@KINDS
def test_a_503_is_retried_after_retry_after_until_it_clears(
    kind: str, settings: Settings, own_redis: RedisProcess
) -> None:
    """Redis frozen: the API answers 503 with Retry-After 1; the client waits that long and
    asks again, and gets the list once Redis is back."""
    own = settings.replace(
        redis_url=own_redis.url, retry_backoff_base_s=0.05, retry_backoff_cap_s=1.0
    )
    client = redis.Redis.from_url(own_redis.url)
    client.hset(user_key(own.key_prefix, "alice"), DATA_FIELD, encode(make_list("alice", ["a"])))
    client.close()
    assert own_redis.pid is not None
    with live_api(own) as api:
        os.kill(own_redis.pid, signal.SIGSTOP)
        thaw = threading.Timer(1.2, os.kill, (own_redis.pid, signal.SIGCONT))
        thaw.start()
        started = time.monotonic()
        try:
            recs = through(kind, api.url, lambda c: c.recs("alice"), retries=5)
        finally:
            thaw.join()
        took = time.monotonic() - started
    assert [i.item for i in recs.items] == ["a"]
    assert took >= 1.0  # at least one Retry-After waited out


@KINDS
def test_a_503_past_the_retries_is_raised(kind: str, settings: Settings) -> None:
    nowhere = settings.replace(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        retry_backoff_base_s=0.05,
        retry_backoff_cap_s=1.0,
    )
    with live_api(nowhere) as api:
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            through(kind, api.url, lambda c: c.recs("alice"), retries=1, max_wait_s=0.2)
        took = time.monotonic() - started
    assert (caught.value.status, caught.value.code) == (503, "unavailable")
    assert 0.2 <= took < 10  # one wait, capped at max_wait_s


@KINDS
def test_an_api_that_cannot_be_reached_is_a_transient_error(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TransientError, match=f"cannot reach the API at {url}"):
        through(kind, url, lambda c: c.recs("alice"))


def test_a_new_items_source_is_typed() -> None:
    """Issue 23: the answer's ``source`` on an item the model does not know yet."""
    body = {
        "user": "u",
        "source": "personal",
        "model_version": "v1",
        "updated_at": 1,
        "written_at": 2,
        "variant": "current",
        "items": [
            {"item": "a", "score": 0.9},
            {"item": "upload-7", "score": 0.8, "source": "content"},
        ],
    }
    recs = parse_recs(body)
    assert recs.items == (
        Recommendation("a", 0.9),
        Recommendation("upload-7", 0.8, source="content"),
    )
