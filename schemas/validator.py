"""Validate raw event bytes against the JSON Schema files; return a typed event or a reason.

The schema files are compiled once, at import, into Python functions
(fastjsonschema), so each event costs one ``orjson.loads`` plus one compiled
check. :func:`validate` never raises on input: bad bytes, non-UTF-8, non-JSON,
NaN, wrong types, missing or extra fields, a key given twice and oversized
payloads all come back as a :class:`Rejection` that names the field, the rule
and the offending value.

A key given twice is refused rather than read as its last value (what JSON
parsers, orjson included, do): two readers of the same bytes could otherwise
disagree on the event, and a producer that writes a key twice has a bug worth
hearing about. orjson does not report duplicates, so :func:`_duplicate_key`
checks for them; it costs one ``bytes.count`` on a typical event, and a second
parse only when the message has more colons than keys.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import fastjsonschema
import orjson

from schemas.events import EVENT_TYPES, Event, EventType, ForgetEvent, RateEvent, WatchEvent
from schemas.items import ItemRecord

#: Largest accepted message, in bytes. A valid event is well under 1 KiB; the
#: bound keeps a hostile 1 MB payload from costing a full JSON parse.
MAX_EVENT_BYTES = 4096

_VALUE_PREVIEW = 60


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event was refused: which ``field``, which ``rule``, what ``value`` (truncated).

    ``field`` is ``"payload"`` when the bytes are not a JSON object at all.
    ``str(rejection)`` is the sentence that goes into the dead-letter record.
    """

    field: str
    rule: str
    message: str
    value: str = ""

    def __str__(self) -> str:
        shown = f" (got {self.value})" if self.value else ""
        return f"{self.field}: {self.message}{shown}"

    def as_dict(self) -> dict[str, str]:
        return {
            "field": self.field,
            "rule": self.rule,
            "message": self.message,
            "value": self.value,
        }


def _preview(value: Any) -> str:
    text = repr(value)
    if len(text) > _VALUE_PREVIEW:
        text = text[: _VALUE_PREVIEW - 3] + "..."
    return text


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return doc


_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_unique_pairs)


def _duplicate_key(data: bytes | bytearray | memoryview | str, doc: dict[str, Any]) -> str | None:
    """The first key that some object of ``data`` (already parsed into ``doc``) holds twice.

    Every key is followed by a colon outside any string, so a flat object
    whose bytes hold no more colons than it has keys has no key twice: the
    common case costs one count. Otherwise the text is parsed again with a
    hook that sees every key.
    """
    colons = data.count(":") if isinstance(data, str) else bytes(data).count(b":")
    if colons <= len(doc) and not any(isinstance(v, (dict, list)) for v in doc.values()):
        return None
    text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    try:
        _PAIRS_DECODER.decode(text)
    except _DuplicateKeyError as exc:
        return exc.key
    return None


#: The item record's type: not an event (it is keyed by item, on its own topic), but
#: held to the same rules by the same validator (:func:`validate_item`).
ITEM_TYPE = "item"


def load_schema(event_type: EventType | Literal["item"]) -> dict[str, Any]:
    """The parsed JSON Schema of one event type, or of the item record (the newest version)."""
    raw = resources.files(__package__).joinpath(f"{event_type}.v1.json").read_bytes()
    schema: dict[str, Any] = orjson.loads(raw)
    return schema


#: One compiled checker per event type, built at import: a broken schema file
#: fails the process at start, and no event pays for compilation.
_CHECKERS: dict[str, Callable[[Any], Any]] = {
    t: fastjsonschema.compile(load_schema(t)) for t in EVENT_TYPES
}
_CHECKERS[ITEM_TYPE] = fastjsonschema.compile(load_schema("item"))


def _properties(event_type: str) -> dict[str, Any]:
    props: dict[str, Any] = load_schema(event_type)["properties"]  # type: ignore[arg-type]
    return props


@cache
def _required(event_type: str) -> tuple[str, ...]:
    return tuple(load_schema(event_type)["required"])  # type: ignore[arg-type]


@cache
def _allowed(event_type: str) -> frozenset[str]:
    return frozenset(_properties(event_type))


def _rejection_from_schema(event_type: str, doc: dict[str, Any], exc: Any) -> Rejection:
    rule = exc.rule or "schema"
    if rule == "required":
        missing = [f for f in _required(event_type) if f not in doc]
        return Rejection(missing[0] if missing else "payload", "required", "is required")
    if rule == "additionalProperties":
        extra = sorted(k for k in doc if k not in _allowed(event_type))
        name = extra[0] if extra else "payload"
        return Rejection(
            name,
            "additionalProperties",
            "is not a field of an item record"
            if event_type == ITEM_TYPE
            else f"is not a field of a {event_type} event",
            _preview(name),
        )
    name = exc.name[5:] if exc.name.startswith("data.") else exc.name
    message = exc.message
    prefix = f"{exc.name} "
    if message.startswith(prefix):
        message = message[len(prefix) :]
    if name == "ts" and rule == "minimum" and _in_seconds(exc.value):
        message += "; ts is in epoch milliseconds, and this looks like seconds (multiply by 1000)"
    return Rejection(name or "payload", rule, message, _preview(exc.value))


def _in_seconds(value: Any) -> bool:
    """Whether a too-small ``ts`` reads as a time from 2000 to 2100 in epoch seconds: the
    likeliest mistake (issue 26), which the bare "must be bigger than" did not name."""
    return type(value) is int and 946_684_800 <= value <= 4_102_444_800


def _build(event_type: str, doc: dict[str, Any]) -> Event:
    if event_type == "watch":
        duration = doc.get("duration_s")
        return WatchEvent(
            doc["event_id"],
            doc["user_id"],
            doc["item_id"],
            float(doc["watched_s"]),
            int(doc["ts"]),
            None if duration is None else float(duration),
        )
    if event_type == "rate":
        return RateEvent(
            doc["event_id"], doc["user_id"], doc["item_id"], float(doc["rating"]), int(doc["ts"])
        )
    return ForgetEvent(doc["event_id"], doc["user_id"], int(doc["ts"]))


def validate(
    data: bytes | bytearray | memoryview | str | None, event_type: str | None = None
) -> Event | Rejection:
    """Parse and validate one message.

    ``event_type`` is the type the topic carries; when given, an event whose
    ``type`` differs is rejected. When None, the event's own ``type`` decides
    (one of the event types: an item record is no event, :func:`validate_item`).
    An unknown ``event_type`` is a programming error (``KeyError``), not bad input.
    """
    if event_type == ITEM_TYPE:
        raise KeyError("item records are validated by validate_item")
    checked = _checked(data, event_type)
    if isinstance(checked, Rejection):
        return checked
    kind, doc = checked
    return _build(kind, doc)


def validate_item(data: bytes | bytearray | memoryview | str | None) -> ItemRecord | Rejection:
    """Parse and validate one item record (``item.v1.json``), by the rules of the events:
    the same size limit, parsing and checks; its ``type`` may be left out."""
    checked = _checked(data, ITEM_TYPE)
    if isinstance(checked, Rejection):
        return checked
    _, doc = checked
    return ItemRecord(
        doc["item_id"],
        int(doc["ts"]),
        doc.get("title"),
        tuple(doc.get("tags", ())),
        doc.get("available", True),
        doc.get("attrs", {}),
    )


def _checked(
    data: bytes | bytearray | memoryview | str | None, event_type: str | None
) -> tuple[str, dict[str, Any]] | Rejection:
    """The checked type and JSON object of one message, or why it is refused."""
    if data is None:
        return Rejection("payload", "empty", "message has no value")
    size = len(data)
    if size == 0:
        return Rejection("payload", "empty", "message is empty")
    if size > MAX_EVENT_BYTES:
        return Rejection(
            "payload", "maxBytes", f"message is {size} bytes, the limit is {MAX_EVENT_BYTES}"
        )
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if isinstance(data, (bytes, bytearray, memoryview)):
            try:
                bytes(data).decode("utf-8")
            except UnicodeDecodeError as uexc:
                return Rejection(
                    "payload",
                    "utf8",
                    f"is not valid UTF-8 (byte {uexc.start})",
                    _preview(bytes(data)[uexc.start : uexc.start + 4]),
                )
        return Rejection("payload", "json", f"is not valid JSON: {exc.msg} at {exc.pos}")
    if not isinstance(doc, dict):
        return Rejection(
            "payload", "type", f"must be a JSON object, not {type(doc).__name__}", _preview(doc)
        )
    duplicate = _duplicate_key(data, doc)
    if duplicate is not None:
        return Rejection(
            duplicate, "duplicateKey", "appears more than once in the object", _preview(duplicate)
        )
    declared = doc.get("type")
    if event_type is not None:
        kind = event_type
    elif isinstance(declared, str) and declared in EVENT_TYPES:
        kind = declared
    elif declared is None:
        return Rejection("type", "required", "is required")
    else:
        return Rejection(
            "type", "enum", f"must be one of {', '.join(EVENT_TYPES)}", _preview(declared)
        )
    checker = _CHECKERS[kind]
    if declared is None and kind == ITEM_TYPE:
        pass  # a record's type is optional: its topic says what it is
    elif declared != kind:
        if declared is None:
            return Rejection("type", "required", "is required")
        return Rejection("type", "const", f"must be {kind!r} on this topic", _preview(declared))
    try:
        checker(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        return _rejection_from_schema(kind, doc, exc)
    return kind, doc


def check(data: bytes | str, event_type: str | None = None) -> Event:
    """Like :func:`validate` but raises :class:`~freshrec.errors.BadInputError` on a rejection."""
    from freshrec.errors import BadInputError

    result = validate(data, event_type)
    if isinstance(result, Rejection):
        raise BadInputError(str(result))
    return result
