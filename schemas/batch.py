"""A batch of events in one body (a JSON array, or newline-delimited JSON), each validated alone.

``POST /events`` takes many events per request; each is judged by
:func:`schemas.validator.validate`, the validator the worker and the publisher
use, so an event the API accepts is one the worker accepts. Only a body that
is not a batch at all (not JSON, not an array, or not UTF-8) is refused as a
whole; inside a batch, a bad event is one :class:`~schemas.validator.Rejection`
beside the good ones.

A key given twice inside an event is refused, as the validator refuses it in
a single message. orjson keeps the last value silently, so when the body has
more colons than its objects have keys (a colon inside a string, or a
duplicate), it is parsed again with a hook that sees every key.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from freshrec.errors import BadInputError
from schemas.events import Event
from schemas.items import ItemRecord
from schemas.validator import Rejection, validate, validate_item

Outcome = Event | Rejection
#: What ``POST /items`` makes of each element: a record, or why it is refused.
ItemOutcome = ItemRecord | Rejection


class _Flagged(dict[str, Any]):
    """A parsed object that remembers the first key it was given twice."""

    duplicate: str | None = None


def _flag_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = _Flagged(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                doc.duplicate = key
                break
            seen.add(key)
    return doc


def _int_as_orjson_reads_it(text: str) -> int | float:
    """orjson reads an integer beyond 64 bits as a float; the second parse must agree, or the
    same event would be a float ``ts`` (rejected by the schema) on one path and an integer
    orjson cannot write again on the other (a 500 the fuzz found)."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(text)


_FLAGGING_DECODER = json.JSONDecoder(
    object_pairs_hook=_flag_pairs, parse_int=_int_as_orjson_reads_it
)


def parse_lines(body: bytes) -> list[Outcome]:
    """Newline-delimited JSON: one event per non-blank line (``\\r\\n`` endings accepted)."""
    return [validate(line) for line in _lines(body)]


def parse_item_lines(body: bytes) -> list[ItemOutcome]:
    """:func:`parse_lines` for item records (``POST /items``)."""
    return [validate_item(line) for line in _lines(body)]


def _lines(body: bytes) -> list[bytes]:
    return [line for raw in body.split(b"\n") if (line := raw.rstrip(b"\r")).strip()]


def parse_array(body: bytes) -> list[Outcome]:
    """A JSON array of events (a single object is a batch of one).

    Raises :class:`BadInputError` when the body is not JSON or not an array of
    values: nothing in it can be told apart as an event.
    """
    return [validate(raw) if isinstance(raw, bytes) else raw for raw in _elements(body)]


def parse_item_array(body: bytes) -> list[ItemOutcome]:
    """:func:`parse_array` for item records (``POST /items``)."""
    return [validate_item(raw) if isinstance(raw, bytes) else raw for raw in _elements(body)]


def _elements(body: bytes) -> list[bytes | Rejection]:
    """Each element of a JSON array body as its own JSON bytes, or why it cannot be one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadInputError(f"body is not valid JSON: {exc.msg} at {exc.pos}") from None
    if isinstance(doc, dict):
        return [body]
    if not isinstance(doc, list):
        raise BadInputError(f"body must be a JSON array of events, not {type(doc).__name__}")
    if _may_repeat_keys(body, doc):
        doc = _FLAGGING_DECODER.decode(body.decode("utf-8"))
    out: list[bytes | Rejection] = []
    for element in doc:
        duplicate = getattr(element, "duplicate", None)
        if duplicate is not None:
            out.append(
                Rejection(
                    duplicate,
                    "duplicateKey",
                    "appears more than once in the object",
                    repr(duplicate),
                )
            )
        else:
            try:
                raw = orjson.dumps(element)
            except orjson.JSONEncodeError as exc:
                out.append(Rejection("payload", "json", f"cannot be read as an event: {exc}"))
                continue
            out.append(raw)
    return out


def _may_repeat_keys(body: bytes, doc: list[Any]) -> bool:
    """False when no object of ``doc`` can have held a key twice: as many colons as keys."""
    keys = 0
    for element in doc:
        if isinstance(element, dict):
            if any(isinstance(v, (dict, list)) for v in element.values()):
                return True
            keys += len(element)
        elif isinstance(element, list):
            return True
    return body.count(b":") > keys
