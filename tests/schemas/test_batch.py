"""schemas.batch: a body of many events, each with its own answer."""

from __future__ import annotations

from schemas.batch import parse_array
from schemas.events import WatchEvent
from schemas.validator import Rejection

GOOD = (
    b'{"type":"watch","event_id":"e1","user_id":"u1","item_id":"i1",'
    b'"watched_s":10,"ts":1735689600000}'
)


def test_an_integer_beyond_64_bits_is_refused_with_a_reason_not_a_server_error() -> None:
    """Regression: schemathesis sent an array whose objects repeat a key (so the stdlib
    decoder reads it) holding a number past 64 bits; writing it back raised TypeError and
    POST /events answered 500."""
    body = b"[" + GOOD + b',{"n": 123456789012345678901234567890, "x": {"y": 1, "y": 2}}]'
    first, second = parse_array(body)
    assert isinstance(first, WatchEvent)
    assert isinstance(second, Rejection) and (second.field, second.rule) == ("payload", "json")
