"""An event as a Kafka message: its topic, its key (the user id) and its value (the JSON object).

Every producer of events (``streams.publisher`` for site back-ends, the API's
``POST /events``) goes through :func:`as_message`, so an event reaches the
same topic with the same key and bytes whichever way it was sent: keyed by
user id, all of one user's events land on one partition, in order, and reach
the same worker.
"""

from __future__ import annotations

import orjson

from freshrec.settings import Settings
from schemas.events import Event, EventType, to_dict


def topics_by_type(settings: Settings) -> dict[EventType, str]:
    """Event type -> the topic that carries it: the one map of the event topics.

    Producers send by it (:func:`topic_for`); the worker reads these topics and
    validates each message against the type its topic carries (:func:`event_types`).
    """
    return {
        "watch": settings.topic_watch,
        "rate": settings.topic_rate,
        "forget": settings.topic_forget,
    }


def event_types(settings: Settings) -> dict[str, EventType]:
    """Topic name -> the type of the events it carries (what its messages must be)."""
    return {topic: kind for kind, topic in topics_by_type(settings).items()}


def topic_for(settings: Settings, event_type: EventType) -> str:
    """The topic that carries events of ``event_type``."""
    return topics_by_type(settings)[event_type]


def as_message(settings: Settings, event: Event) -> tuple[str, bytes, bytes]:
    """``(topic, key, value)`` of a validated event."""
    return (
        topic_for(settings, event.type),
        event.user_id.encode(),
        orjson.dumps(to_dict(event)),
    )
