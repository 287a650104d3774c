"""Typed events: what a valid ``watch``, ``rate`` or ``forget`` message becomes.

The JSON Schema files beside this module are the contract; these classes are
its Python face, built only by :mod:`schemas.validator` after validation, so
code that holds one can trust every field. Treat them as immutable; they are not
``frozen`` only because a frozen dataclass costs 1.7 µs more to build, which
was a third of the validator's time per event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

EventType = Literal["watch", "rate", "forget"]
EVENT_TYPES: tuple[EventType, ...] = ("watch", "rate", "forget")


@dataclass(slots=True)
class WatchEvent:
    """A user watched ``watched_s`` seconds of an item (of ``duration_s``, when known)."""

    event_id: str
    user_id: str
    item_id: str
    watched_s: float
    ts: int
    duration_s: float | None = None
    type: Literal["watch"] = "watch"

    @property
    def fraction(self) -> float | None:
        """Share of the item watched, capped at 1; None when the duration is unknown."""
        if self.duration_s is None:
            return None
        return min(1.0, self.watched_s / self.duration_s)


@dataclass(slots=True)
class RateEvent:
    """A user rated an item from 0.5 to 5 stars."""

    event_id: str
    user_id: str
    item_id: str
    rating: float
    ts: int
    type: Literal["rate"] = "rate"


@dataclass(slots=True)
class ForgetEvent:
    """Delete everything kept about a user."""

    event_id: str
    user_id: str
    ts: int
    type: Literal["forget"] = "forget"


Event = WatchEvent | RateEvent | ForgetEvent
InteractionEvent = WatchEvent | RateEvent


def to_dict(event: Event) -> dict[str, Any]:
    """The event as the JSON object of its schema (optional fields left out when unset)."""
    data = asdict(event)
    if data.get("duration_s", 0) is None:
        del data["duration_s"]
    return data
