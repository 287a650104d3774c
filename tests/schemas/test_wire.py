"""The one map between event types and their topics, both ways."""

from __future__ import annotations

from freshrec.settings import Settings
from schemas.events import EVENT_TYPES, WatchEvent
from schemas.wire import as_message, event_types, topic_for, topics_by_type


def test_every_event_type_has_its_topic_and_the_worker_reads_the_same_map_inverted() -> None:
    s = Settings().replace(topic_watch="w", topic_rate="r", topic_forget="f")
    assert topics_by_type(s) == {"watch": "w", "rate": "r", "forget": "f"}
    assert set(topics_by_type(s)) == set(EVENT_TYPES)
    assert event_types(s) == {"w": "watch", "r": "rate", "f": "forget"}
    assert [topic_for(s, kind) for kind in EVENT_TYPES] == ["w", "r", "f"]


def test_an_event_goes_to_its_types_topic_keyed_by_its_user() -> None:
    s = Settings().replace(topic_watch="w")
    event = WatchEvent("e1", "u1", "i1", 10.0, 1_735_689_600_000, 20.0)
    topic, key, _ = as_message(s, event)
    assert (topic, key) == ("w", b"u1")
