"""The event validator: valid samples pass, every kind of bad input gets its specific reason."""

from __future__ import annotations

import json
from pathlib import Path

import fastjsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshrec.errors import BadInputError
from schemas.events import EVENT_TYPES, EventType, ForgetEvent, RateEvent, WatchEvent, to_dict
from schemas.validator import MAX_EVENT_BYTES, Rejection, check, load_schema, validate

WATCH = {
    "type": "watch",
    "event_id": "ev-1",
    "user_id": "user-1",
    "item_id": "movie-1",
    "watched_s": 1200.5,
    "duration_s": 5400,
    "ts": 1_763_870_000_000,
}
RATE = {
    "type": "rate",
    "event_id": "ev-2",
    "user_id": "user-1",
    "item_id": "movie-2",
    "rating": 4.5,
    "ts": 1_763_870_000_001,
}
FORGET = {"type": "forget", "event_id": "ev-3", "user_id": "user-1", "ts": 1_763_870_000_002}


def with_(base: dict, **changes: object) -> bytes:
    doc = dict(base)
    for key, value in changes.items():
        if value is _DROP:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


_DROP = object()


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_schema_compiles_and_is_versioned(event_type: EventType) -> None:
    schema = load_schema(event_type)
    fastjsonschema.compile(schema)
    assert schema["x-version"] == 1
    assert schema["$id"].endswith(f"/{event_type}/v1.json")
    assert schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        if prop.get("type") == "string":
            assert "maxLength" in prop and "pattern" in prop, name
        if prop.get("type") in ("number", "integer"):
            assert "maximum" in prop or "enum" in prop, name


def test_valid_watch_becomes_a_typed_event() -> None:
    event = validate(orjson.dumps(WATCH))
    assert event == WatchEvent("ev-1", "user-1", "movie-1", 1200.5, 1_763_870_000_000, 5400.0)
    assert isinstance(event, WatchEvent)
    assert event.fraction == pytest.approx(1200.5 / 5400)


def test_valid_rate_and_forget() -> None:
    assert validate(orjson.dumps(RATE)) == RateEvent(
        "ev-2", "user-1", "movie-2", 4.5, 1_763_870_000_001
    )
    assert validate(orjson.dumps(FORGET)) == ForgetEvent("ev-3", "user-1", 1_763_870_000_002)


def test_watch_without_duration_is_valid_and_round_trips() -> None:
    event = validate(with_(WATCH, duration_s=_DROP))
    assert isinstance(event, WatchEvent) and event.duration_s is None and event.fraction is None
    assert validate(orjson.dumps(to_dict(event))) == event


def test_str_input_and_integral_float_timestamp_accepted() -> None:
    event = validate(json.dumps(dict(WATCH, ts=1.763870000000e12)))
    assert isinstance(event, WatchEvent)
    assert event.ts == 1_763_870_000_000 and isinstance(event.ts, int)


def test_fraction_is_capped_at_one_for_rewatches() -> None:
    event = validate(with_(WATCH, watched_s=9000, duration_s=3000))
    assert isinstance(event, WatchEvent) and event.fraction == 1.0


def test_sample_file_is_all_valid() -> None:
    lines = (Path(__file__).parents[2] / "examples" / "events.jsonl").read_bytes().splitlines()
    assert lines
    assert all(not isinstance(validate(line), Rejection) for line in lines)


# (name, raw bytes, topic type or None, expected field, expected rule)
BAD: list[tuple[str, bytes | str | None, str | None, str, str]] = [
    ("none", None, None, "payload", "empty"),
    ("empty", b"", None, "payload", "empty"),
    ("non-json", b"hello", None, "payload", "json"),
    ("truncated json", b'{"type": "watch", "user_id"', None, "payload", "json"),
    ("non-utf8", b'{"type": "watch", "user_id": "\xff\xfe"}', None, "payload", "utf8"),
    ("nan", with_(WATCH).replace(b"1200.5", b"NaN"), None, "payload", "json"),
    ("infinity", with_(WATCH).replace(b"1200.5", b"Infinity"), None, "payload", "json"),
    ("huge payload", b'{"pad": "' + b"x" * 1_000_000 + b'"}', None, "payload", "maxBytes"),
    ("array", b"[1, 2]", None, "payload", "type"),
    ("string", b'"watch"', None, "payload", "type"),
    ("number", b"42", None, "payload", "type"),
    ("null", b"null", None, "payload", "type"),
    ("missing type", with_(WATCH, type=_DROP), None, "type", "required"),
    ("unknown type", with_(WATCH, type="click"), None, "type", "enum"),
    # Regression: an unhashable "type" crashed the checker lookup with TypeError.
    ("type is a list", with_(WATCH, type=["watch"]), None, "type", "enum"),
    ("type is an object on topic", with_(WATCH, type={"a": 1}), "watch", "type", "const"),
    ("wrong type for topic", with_(RATE), "watch", "type", "const"),
    ("missing type on topic", with_(WATCH, type=_DROP), "watch", "type", "required"),
    ("missing event_id", with_(WATCH, event_id=_DROP), None, "event_id", "required"),
    ("missing user_id", with_(WATCH, user_id=_DROP), None, "user_id", "required"),
    ("missing item_id", with_(WATCH, item_id=_DROP), None, "item_id", "required"),
    ("missing watched_s", with_(WATCH, watched_s=_DROP), None, "watched_s", "required"),
    ("missing ts", with_(WATCH, ts=_DROP), None, "ts", "required"),
    ("missing rating", with_(RATE, rating=_DROP), None, "rating", "required"),
    ("extra field", with_(WATCH, extra=1), None, "extra", "additionalProperties"),
    ("item_id on forget", with_(FORGET, item_id="m1"), None, "item_id", "additionalProperties"),
    ("empty user_id", with_(WATCH, user_id=""), None, "user_id", "minLength"),
    ("long user_id", with_(WATCH, user_id="u" * 65), None, "user_id", "maxLength"),
    ("space in user_id", with_(WATCH, user_id="user 1"), None, "user_id", "pattern"),
    ("newline after user_id", with_(WATCH, user_id="user-1\n"), None, "user_id", "pattern"),
    ("unicode item_id", with_(WATCH, item_id="film-é"), None, "item_id", "pattern"),
    ("long event_id", with_(WATCH, event_id="e" * 65), None, "event_id", "maxLength"),
    ("user_id number", with_(WATCH, user_id=17), None, "user_id", "type"),
    ("item_id null", with_(WATCH, item_id=None), None, "item_id", "type"),
    ("ts string", with_(WATCH, ts="1763870000000"), None, "ts", "type"),
    ("ts fractional", with_(WATCH, ts=1763870000000.5), None, "ts", "type"),
    ("ts bool", with_(WATCH, ts=True), None, "ts", "type"),
    ("ts in seconds", with_(WATCH, ts=1_763_870_000), None, "ts", "minimum"),
    ("ts far future", with_(WATCH, ts=5_000_000_000_000), None, "ts", "maximum"),
    ("watched_s string", with_(WATCH, watched_s="10"), None, "watched_s", "type"),
    ("watched_s negative", with_(WATCH, watched_s=-1), None, "watched_s", "minimum"),
    ("watched_s too large", with_(WATCH, watched_s=10**7), None, "watched_s", "maximum"),
    ("duration zero", with_(WATCH, duration_s=0), None, "duration_s", "exclusiveMinimum"),
    ("duration bool", with_(WATCH, duration_s=False), None, "duration_s", "type"),
    ("rating too low", with_(RATE, rating=0), None, "rating", "enum"),
    ("rating too high", with_(RATE, rating=5.5), None, "rating", "enum"),
    ("rating off-step", with_(RATE, rating=3.3), None, "rating", "enum"),
    ("rating string", with_(RATE, rating="4"), None, "rating", "type"),
    ("rating huge exponent", with_(RATE).replace(b"4.5", b"1e400"), None, "payload", "json"),
    # Regression (issue 10, item 5): a key given twice was read as its last value.
    (
        "user_id twice",
        with_(WATCH)[:-1] + b', "user_id": "other"}',
        None,
        "user_id",
        "duplicateKey",
    ),
    (
        "duplicate in a nested object",
        with_(WATCH)[:-1] + b', "x": {"a": 1, "a": 2}}',
        None,
        "a",
        "duplicateKey",
    ),
    (
        "duplicate with colons in values",
        with_(WATCH, item_id="m:1")[:-1] + b', "item_id": "m:2"}',
        "watch",
        "item_id",
        "duplicateKey",
    ),
]


@pytest.mark.parametrize(
    ("raw", "topic_type", "field", "rule"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_bad_input_gets_its_specific_reason(
    raw: bytes | None, topic_type: str | None, field: str, rule: str
) -> None:
    result = validate(raw, topic_type)
    assert isinstance(result, Rejection), result
    assert (result.field, result.rule) == (field, rule), str(result)
    text = str(result)
    assert text.startswith(f"{field}: ")
    assert len(text) < 200, "reasons stay short enough for a log line"


def test_there_are_at_least_30_bad_cases() -> None:
    assert len(BAD) >= 30


def test_colons_inside_values_are_no_duplicate() -> None:
    assert isinstance(validate(with_(WATCH, event_id="e:1:2:3:4:5:6:7:8")), WatchEvent)


def test_rejection_shows_the_offending_value_truncated() -> None:
    result = validate(with_(WATCH, user_id="x" * 100))
    assert isinstance(result, Rejection)
    assert result.value.startswith("'xxx") and result.value.endswith("...")
    assert len(result.value) <= 60


def test_a_ts_in_seconds_is_rejected_with_a_milliseconds_hint() -> None:
    """Issue 26, item 6: a ts in seconds got only "must be bigger than or equal to ..."."""
    seconds = validate(with_(WATCH, ts=1_763_870_000))
    tiny = validate(with_(WATCH, ts=12))
    assert isinstance(seconds, Rejection) and isinstance(tiny, Rejection)
    assert "epoch milliseconds, and this looks like seconds (multiply by 1000)" in str(seconds)
    assert "seconds" not in str(tiny)


def test_payload_at_the_size_limit_is_parsed_not_rejected_for_size() -> None:
    raw = with_(WATCH)
    padded = raw[:-1] + b" " * (MAX_EVENT_BYTES - len(raw)) + b"}"
    assert len(padded) == MAX_EVENT_BYTES
    assert isinstance(validate(padded), WatchEvent)


def test_check_raises_bad_input_with_reason() -> None:
    with pytest.raises(BadInputError, match=r"rating: must be one of \[0.5, 1, 1.5"):
        check(with_(RATE, rating=6))
    assert isinstance(check(with_(RATE)), RateEvent)


def test_validate_never_raises_on_arbitrary_bytes() -> None:
    import random

    rng = random.Random(1)
    base = with_(WATCH)
    for _ in range(2000):
        mutated = bytearray(base)
        for _ in range(rng.randint(1, 5)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        result = validate(bytes(mutated))
        assert isinstance(result, (Rejection, WatchEvent))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    doc=st.dictionaries(st.sampled_from([*WATCH, *RATE, "extra"]), json_values, max_size=9),
    topic=st.sampled_from([None, *EVENT_TYPES]),
)
def test_validate_never_raises_on_any_json_object(doc: dict, topic: str | None) -> None:
    result = validate(orjson.dumps(doc), topic)
    assert isinstance(result, (Rejection, WatchEvent, RateEvent, ForgetEvent))
