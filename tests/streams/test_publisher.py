"""The publisher against the real broker: round trip, keys, validation, delivery failures."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Message

from freshrec.errors import BadInputError, DeliveryError
from freshrec.settings import Settings
from freshrec.stack import BrokerProcess, free_port
from schemas.events import RateEvent, WatchEvent, to_dict
from schemas.validator import Rejection, validate
from streams.publisher import AsyncPublisher, EventLike, Publisher
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


def consume_all(
    settings: Settings, topics: list[str], expected: int, timeout_s: float = 30
) -> list[Message]:
    """Read ``expected`` messages from ``topics`` (deadline-bounded); return them."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.app_id}-reader",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    consumer.subscribe(topics)
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(messages) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                assert msg.error() is None, msg.error()
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def sample_events(n: int) -> list[WatchEvent | RateEvent]:
    events: list[WatchEvent | RateEvent] = []
    for i in range(n):
        user = f"user-{i % 7}"
        if i % 3:
            events.append(
                WatchEvent(f"e{i}", user, f"item-{i % 11}", 10.0 + i, 1_763_870_000_000 + i, 100.0)
            )
        else:
            events.append(
                RateEvent(
                    f"e{i}", user, f"item-{i % 11}", 0.5 + (i % 10) / 2, 1_763_870_000_000 + i
                )
            )
    return events


def test_round_trip_keeps_every_event_intact_and_keyed_by_user(
    settings: Settings, topics: list[str]
) -> None:
    events = sample_events(300)
    with Publisher(settings) as publisher:
        report = publisher.publish_many(events)
    assert report.sent == 300 and not report.rejected

    messages = consume_all(settings, [settings.topic_watch, settings.topic_rate], 300)
    assert len(messages) == 300
    received = {}
    for msg in messages:
        event = validate(msg.value(), "watch" if msg.topic() == settings.topic_watch else "rate")
        assert not isinstance(event, Rejection), event
        assert msg.key() == event.user_id.encode()
        received[event.event_id] = event
    assert received == {e.event_id: e for e in events}
    # One user's events of one topic share a partition, so they stay in order.
    by_topic_user: dict[tuple[str | None, bytes | None], set[int | None]] = {}
    for msg in messages:
        by_topic_user.setdefault((msg.topic(), msg.key()), set()).add(msg.partition())
    assert all(len(p) == 1 for p in by_topic_user.values())


def test_publish_many_reports_bad_inputs_and_sends_the_rest(
    settings: Settings, topics: list[str]
) -> None:
    good = to_dict(sample_events(1)[0])
    inputs: list[EventLike] = [
        orjson.dumps(good),
        b"not json",
        dict(good, event_id="e-2", rating=9, type="rate"),
        dict(good, event_id="e-3"),
    ]
    with Publisher(settings) as publisher:
        report = publisher.publish_many(inputs)
    assert report.sent == 2
    assert [pos for pos, _ in report.rejected] == [2, 3]
    assert "payload: is not valid JSON" in report.rejected[0][1]
    assert "rating" in report.rejected[1][1]
    assert len(consume_all(settings, [settings.topic_watch, settings.topic_rate], 2)) == 2


def test_send_refuses_bad_input_with_reason(settings: Settings) -> None:
    with Publisher(settings) as publisher, pytest.raises(BadInputError, match="user_id"):
        publisher.send({"type": "forget", "event_id": "x", "user_id": "", "ts": 1_763_870_000_000})


#: Typed events the README's own example let through to the dead-letter topic (issue 13.1),
#: each with the field and rule the refusal must name.
BAD_TYPED_EVENTS = [
    (
        RateEvent("ev-1", "user-1", "movie-9", rating=7, ts=1_763_870_000_000),
        r"rating: must be one of",
    ),
    (
        WatchEvent("ev-2", "user 1", "movie-9", watched_s=1800, ts=1_763_870_000_000),
        r"user_id: must match pattern",
    ),
    (
        WatchEvent("ev-3", "user-1", "movie-9", watched_s=-5, ts=1_763_870_000_000),
        r"watched_s: must be bigger than or equal to 0",
    ),
]


@pytest.mark.parametrize(("event", "reason"), BAD_TYPED_EVENTS)
def test_typed_events_are_validated_like_dicts_not_sent_to_the_dead_letter_topic(
    settings: Settings, event: EventLike, reason: str
) -> None:
    """Issue 13.1: ``Publisher.publish(RateEvent(..., rating=7))`` returned without error."""
    with Publisher(settings) as publisher, pytest.raises(BadInputError, match=reason):
        publisher.publish(event)

    async def go() -> None:
        async with AsyncPublisher(settings) as publisher:
            with pytest.raises(BadInputError, match=reason):
                await publisher.publish(event)

    asyncio.run(go())


def readme_python_example() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", readme, re.S)
    assert match is not None, "the README has no Python example"
    return match.group(1)


def test_readme_example_publishes_and_refuses_rating_7(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13.1, from the README itself: its example runs as written, and the same
    example with ``rating=7`` raises ``BadInputError`` naming the field and the rule.
    The topics exist first, as on a running stack: no client creates one (issue 28)."""
    ensure_topics(settings)
    for key in [k for k in os.environ if k.startswith("FRESHREC_")]:
        monkeypatch.delenv(key)
    for key, value in settings.as_env().items():
        monkeypatch.setenv(key, value)
    code = readme_python_example()
    exec(compile(code, "README.md", "exec"), {})
    bad = re.sub(
        r"WatchEvent\(.*?\)\n",
        'RateEvent("ev-2", "user-1", "movie-9", rating=7, ts=1763870000000)\n',
        code,
        flags=re.S,
    )
    assert "rating=7" in bad
    with pytest.raises(BadInputError, match=r"rating: must be one of \[0\.5, .*\] \(got 7\)"):
        exec(compile(bad, "README.md", "exec"), {})


def test_unreachable_broker_is_a_delivery_error_within_the_timeout() -> None:
    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout_s=1.0)
    publisher = Publisher(settings)
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="delivery failure"):
        publisher.publish(sample_events(1)[0])
    assert time.monotonic() - started < settings.publish_timeout_s + 3


def test_async_publisher_round_trip(settings: Settings, topics: list[str]) -> None:
    events = sample_events(20)

    async def go() -> None:
        async with AsyncPublisher(settings) as publisher:
            await asyncio.gather(*(publisher.publish(e) for e in events))

    asyncio.run(go())
    messages = consume_all(settings, [settings.topic_watch, settings.topic_rate], 20)
    assert sorted(orjson.loads(m.value() or b"null")["event_id"] for m in messages) == sorted(
        e.event_id for e in events
    )


def test_async_publisher_surfaces_delivery_failure() -> None:
    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", publish_timeout_s=1.0)

    async def go() -> None:
        async with AsyncPublisher(settings) as publisher:
            with pytest.raises(DeliveryError):
                await publisher.publish(sample_events(1)[0])

    asyncio.run(go())


def published_until_taken(send: Callable[[], None], deadline_s: float = 30.0) -> None:
    """Send until the broker takes it: a new producer's first records may wait for its id."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            send()
            return
        except DeliveryError:
            assert time.monotonic() < deadline, "the publisher never recovered"


@pytest.mark.parametrize("form", ["sync", "async"])
def test_a_publisher_recovers_after_its_broker_lost_its_state(
    settings: Settings, tmp_path: Path, form: str
) -> None:
    """Regression: a broker that came back without its state (Tansu in memory) no longer
    knew the idempotent producer's id, and every later publish of that publisher failed
    (timed out on every retry, or librdkafka's fatal error), so a site back-end had to
    restart to publish again. A publisher now makes itself a new producer after a
    timeout or a fatal error."""
    broker = BrokerProcess(log_path=tmp_path / "own-broker.log")
    broker.start()
    try:
        own = settings.replace(bootstrap_servers=broker.bootstrap_servers, publish_timeout_s=1.0)
        ensure_topics(own)
        first, second = sample_events(2)
        if form == "sync":
            with Publisher(own) as pub:
                published_until_taken(lambda: pub.publish(first))
                broker.kill()
                with pytest.raises(DeliveryError):
                    pub.publish(second)
                broker.start()  # on the same port, its memory empty
                ensure_topics(own)
                published_until_taken(lambda: pub.publish(second))
        else:

            async def scenario() -> None:
                async with AsyncPublisher(own) as pub:
                    await published_until_taken_async(pub, first)
                    broker.kill()
                    with pytest.raises(DeliveryError):
                        await pub.publish(second)
                    broker.start()
                    ensure_topics(own)
                    await published_until_taken_async(pub, second)

            asyncio.run(scenario())
        got = consume_all(own, [own.topic_watch, own.topic_rate], 1)
        assert [orjson.loads(m.value() or b"{}")["event_id"] for m in got] == [second.event_id]
    finally:
        broker.stop()


async def published_until_taken_async(
    pub: AsyncPublisher, event: EventLike, deadline_s: float = 30.0
) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            await pub.publish(event)
            return
        except DeliveryError:
            assert time.monotonic() < deadline, "the publisher never recovered"
