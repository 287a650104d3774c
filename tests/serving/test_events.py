"""``POST /events`` against the real broker: per-event answers, only valid events produced.

The app runs in-process (``api_client``); the topics are read back from the
session's broker with ``streams.dlq.read_topic``, so "nothing invalid reaches
a topic" is checked where it matters, in the topics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from freshrec.kafka_config import LIBRDKAFKA_LOG
from freshrec.repeats import _NUMBERS
from freshrec.settings import Settings
from freshrec.stack import BrokerProcess, free_port
from schemas.validator import MAX_EVENT_BYTES
from streams.dlq import read_topic
from streams.topics import ensure_topics
from tests.serving.conftest import ApiClient
from tests.streams.worker import rate, watch

pytestmark = pytest.mark.integration

NOW = 1_763_870_000_000
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def topic_messages(settings: Settings) -> dict[str, list[tuple[bytes | None, Any]]]:
    """Every (key, parsed value) in the three event topics and the dead-letter topic."""
    out: dict[str, list[tuple[bytes | None, Any]]] = {}
    for topic in (
        settings.topic_watch,
        settings.topic_rate,
        settings.topic_forget,
        settings.topic_dead_letter,
    ):
        out[topic] = [
            (m.key(), orjson.loads(m.value() or b"null")) for m in read_topic(settings, topic, 10)
        ]
    return out


async def test_mixed_batch_gets_an_answer_per_event_and_only_valid_ones_reach_topics(
    api_client: ApiClient, settings: Settings, topics: list[str]
) -> None:
    batch = [
        watch("e1", "alice", "m1", NOW),
        rate("e2", "alice", "m2", NOW + 1, rating=7),  # not a rating
        rate("e3", "bob", "m3", NOW + 2, rating=4.5),
        {"type": "forget", "event_id": "e4", "user_id": "carol", "ts": NOW + 3},
        {"type": "click", "event_id": "e5", "user_id": "dave", "item_id": "m5", "ts": NOW},
        "not an object",
    ]
    async with api_client() as client:
        resp = await client.post("/events", data=orjson.dumps(batch), headers=JSON)
        body = await resp.json()
    assert resp.status == 207
    assert (body["accepted"], body["rejected"]) == (3, 3)
    statuses = [(r["index"], r["status"]) for r in body["results"]]
    assert statuses == [
        (0, "accepted"),
        (1, "rejected"),
        (2, "accepted"),
        (3, "accepted"),
        (4, "rejected"),
        (5, "rejected"),
    ]
    assert body["results"][0]["event_id"] == "e1"
    assert body["results"][1]["field"] == "rating" and "7" in body["results"][1]["reason"]
    assert body["results"][4]["field"] == "type"
    assert body["results"][5]["field"] == "payload"

    messages = topic_messages(settings)
    assert messages[settings.topic_watch] == [(b"alice", batch[0])]
    assert messages[settings.topic_rate] == [(b"bob", batch[2])]
    assert messages[settings.topic_forget] == [(b"carol", batch[3])]
    assert messages[settings.topic_dead_letter] == []


async def test_newline_delimited_body_with_blank_and_broken_lines(
    api_client: ApiClient, settings: Settings, topics: list[str]
) -> None:
    lines = [
        orjson.dumps(watch("n1", "erin", "m1", NOW)),
        b"",
        b'{"type": "watch", "event_id": ',  # cut short
        orjson.dumps(watch("n2", "erin", "m2", NOW + 5)) + b"\r",
    ]
    async with api_client() as client:
        resp = await client.post("/events", data=b"\n".join(lines), headers=NDJSON)
        body = await resp.json()
    assert resp.status == 207
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected", "accepted"]
    assert body["results"][1]["rule"] == "json"
    assert [v["event_id"] for _, v in topic_messages(settings)[settings.topic_watch]] == [
        "n1",
        "n2",
    ]


async def test_all_accepted_is_200(
    api_client: ApiClient, settings: Settings, topics: list[str]
) -> None:
    async with api_client() as client:
        resp = await client.post(
            "/events", data=orjson.dumps(watch("a1", "frank", "m1", NOW)), headers=JSON
        )
        body = await resp.json()
    assert resp.status == 200, body
    assert body == {
        "accepted": 1,
        "rejected": 0,
        "results": [{"index": 0, "status": "accepted", "event_id": "a1"}],
    }


async def test_nothing_valid_is_a_400_with_each_reason_and_nothing_produced(
    api_client: ApiClient, settings: Settings, topics: list[str]
) -> None:
    bad = [rate("b1", "gina", "m1", NOW, rating=0), watch("b2", "gina", "", NOW)]
    async with api_client() as client:
        resp = await client.post("/events", data=orjson.dumps(bad), headers=JSON)
        body = await resp.json()
    assert resp.status == 400
    assert body["error"]["code"] == "no_valid_events"
    assert [r["field"] for r in body["results"]] == ["rating", "item_id"]
    assert all(not m for m in topic_messages(settings).values())


async def test_a_key_given_twice_is_refused_like_the_validator_refuses_it(
    api_client: ApiClient, settings: Settings, topics: list[str]
) -> None:
    """A JSON array hides duplicate keys from orjson; the batch parser still finds them."""
    one = orjson.dumps(watch("d1", "hal", "m1", NOW))
    twice = one[:-1] + b', "item_id": "m9"}'
    body_bytes = b"[" + one + b"," + twice + b"]"
    async with api_client() as client:
        resp = await client.post("/events", data=body_bytes, headers=JSON)
        body = await resp.json()
    assert resp.status == 207
    assert body["results"][1] == {
        **body["results"][1],
        "status": "rejected",
        "field": "item_id",
        "rule": "duplicateKey",
    }


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        (b"{not json", JSON, 400, "bad_body"),
        (b'"a string"', JSON, 400, "bad_body"),
        (b"[]", JSON, 400, "no_events"),
        (b"\n\n", NDJSON, 400, "no_events"),
        (b"[]", {"Content-Type": "text/csv"}, 415, "unsupported_media_type"),
    ],
)
async def test_bodies_that_are_not_a_batch(
    api_client: ApiClient, data: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    async with api_client() as client:
        resp = await client.post("/events", data=data, headers=headers)
        body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (status, code)


async def test_size_limits_are_413(api_client: ApiClient) -> None:
    event = orjson.dumps(watch("s1", "ivan", "m1", NOW))
    async with api_client(api_events_max_count=2) as client:
        resp = await client.post("/events", data=b"\n".join([event] * 3), headers=NDJSON)
        assert (resp.status, (await resp.json())["error"]["code"]) == (413, "too_large")
    async with api_client(api_events_max_bytes=MAX_EVENT_BYTES) as client:
        resp = await client.post("/events", data=b"\n".join([event] * 40), headers=NDJSON)
        assert (resp.status, (await resp.json())["error"]["code"]) == (413, "too_large")

        async def chunked() -> AsyncIterator[bytes]:
            """No Content-Length to refuse by: the limit holds as the body is read."""
            for _ in range(40):
                yield event + b"\n"

        resp = await client.post("/events", data=chunked(), headers=NDJSON)
        assert (resp.status, (await resp.json())["error"]["code"]) == (413, "too_large")


async def test_token_is_required_when_set(api_client: ApiClient) -> None:
    async with api_client(api_token="s3cret") as client:
        resp = await client.post("/events", data=b"[]", headers=JSON)
        assert resp.status == 401
        wrong = await client.post(
            "/events", data=b"[]", headers={**JSON, "Authorization": "Bearer nope"}
        )
        assert wrong.status == 401
        right = await client.post(
            "/events", data=b"[]", headers={**JSON, "Authorization": "Bearer s3cret"}
        )
        assert (right.status, (await right.json())["error"]["code"]) == (400, "no_events")


async def test_no_broker_reachable_is_a_503_with_retry_after_and_reads_still_work(
    api_client: ApiClient, settings: Settings, write_list: Any
) -> None:
    """The API starts and serves GET /recs with no broker; POST /events answers 503 in
    about the publish timeout, saying which events were not acknowledged."""
    write_list("judy", ["m1", "m2"])
    async with api_client(
        bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout_s=1.0
    ) as client:
        assert (await client.get("/recs/judy")).status == 200
        started = time.monotonic()
        resp = await client.post(
            "/events",
            data=orjson.dumps([watch("x1", "judy", "m1", NOW), rate("x2", "judy", "m1", NOW, 9)]),
            headers=JSON,
        )
        took = time.monotonic() - started
        body = await resp.json()
        assert (await client.get("/recs/judy")).status == 200
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) >= 1
    assert took < 5
    assert body["error"]["code"] == "unavailable"
    assert (body["accepted"], body["rejected"], body["failed"]) == (0, 1, 1)
    assert [r["status"] for r in body["results"]] == ["failed", "rejected"]


async def test_an_unreachable_broker_is_logged_at_a_backoff_and_readyz_says_events_fail(
    api_client: ApiClient, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 26, item 4: an API whose broker was unreachable wrote about 9 error lines a
    second (librdkafka's every reconnect), and /readyz did not mention the broker."""
    caplog.set_level(logging.WARNING, logger=LIBRDKAFKA_LOG.name)
    async with api_client(
        bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout_s=1.0
    ) as client:
        idle = await (await client.get("/readyz")).json()
        resp = await client.post(
            "/events", data=orjson.dumps([watch("y1", "ann", "m1", NOW)]), headers=JSON
        )
        assert resp.status == 503
        started = time.monotonic()
        body = await (await client.get("/readyz")).json()
        await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - started)))
    lines = [r for r in caplog.records if r.name == LIBRDKAFKA_LOG.name]
    assert (idle["events"], body["ready"], body["events"]) == ("idle", True, "unavailable")
    assert "POST /events answers 503" in body["events_reason"]
    # about 5 s of reconnects: the first of each kind, then one per backoff (1 s, 2 s)
    kinds = {_NUMBERS.sub("#", r.getMessage().split(" (")[0]) for r in lines}
    assert 1 <= len(lines) <= 3 * len(kinds), [r.getMessage() for r in lines]
    assert any("more like it in the last" in r.getMessage() for r in lines), lines


async def test_readyz_says_events_are_accepted_once_the_broker_answered(
    api_client: ApiClient, settings: Settings, topics: list[str]
) -> None:
    async with api_client() as client:
        resp = await client.post(
            "/events", data=orjson.dumps([watch("y2", "ann", "m1", NOW)]), headers=JSON
        )
        body = await (await client.get("/readyz")).json()
    assert (resp.status, body["events"]) == (200, "accepting")


async def test_an_integer_beyond_64_bits_is_rejected_not_a_500(
    api_client: ApiClient, settings: Settings, topics: list[str]
) -> None:
    """Regression (found by the schemathesis fuzz): a batch whose ids hold colons is parsed a
    second time with the stdlib decoder, which kept a 29-digit ``ts`` as an int orjson could
    not write back: POST /events answered 500. Both parses now read it as orjson does."""
    valid = orjson.dumps(watch("ok-1", "user:1", "m:1", NOW))
    huge = valid.replace(b'"ok-1"', b'"big-1"').replace(
        str(NOW).encode(), b"13043382651800062802666717184"
    )
    async with api_client() as client:
        resp = await client.post("/events", data=b"[" + valid + b"," + huge + b"]", headers=JSON)
        body = await resp.json()
    assert resp.status == 207, body
    assert [r["status"] for r in body["results"]] == ["accepted", "rejected"]
    assert body["results"][1]["field"] == "ts"


async def test_broker_gone_after_the_first_batch_is_a_503_and_sending_again_later_works(
    api_client: ApiClient, settings: Settings, write_list: Any, tmp_path: Path
) -> None:
    """The producer was connected when its broker died: the next batch is answered 503 with
    Retry-After in about the publish timeout, GET /recs keeps answering, and once a broker is
    back the same batch sent again is taken. Regression: the broker came back without its
    state (Tansu in memory), the idempotent producer's id was unknown to it, librdkafka's
    fatal error ended the producer's poller thread, and POST /events answered 503 until the
    API was restarted."""
    broker = BrokerProcess(log_path=tmp_path / "own-broker.log")
    broker.start()
    try:
        own = settings.replace(bootstrap_servers=broker.bootstrap_servers, publish_timeout_s=1.0)
        ensure_topics(own)
        write_list("kate", ["m1", "m2"])
        batch = orjson.dumps([watch("g2", "kate", "m2", NOW + 1)])
        async with api_client(
            bootstrap_servers=own.bootstrap_servers, publish_timeout_s=1.0
        ) as client:

            async def sent_until_accepted(data: bytes) -> None:
                """A new producer's first records may wait a second for its id (Tansu)."""
                deadline = time.monotonic() + 30
                while (resp := await client.post("/events", data=data, headers=JSON)).status != 200:
                    assert resp.status == 503 and time.monotonic() < deadline, await resp.text()

            await sent_until_accepted(orjson.dumps([watch("g1", "kate", "m1", NOW)]))
            broker.kill()
            started = time.monotonic()
            resp = await client.post("/events", data=batch, headers=JSON)
            took = time.monotonic() - started
            body = await resp.json()
            assert (await client.get("/recs/kate")).status == 200
            assert resp.status == 503, body
            assert int(resp.headers["Retry-After"]) >= 1
            assert took < 5
            assert (body["accepted"], body["failed"]) == (0, 1)
            assert body["results"][0]["status"] == "failed"

            broker.start()  # on the same port, its memory empty: the topics are made again
            ensure_topics(own)
            await sent_until_accepted(batch)
        assert [v["event_id"] for _, v in topic_messages(own)[own.topic_watch]] == ["g2"]
    finally:
        broker.stop()
