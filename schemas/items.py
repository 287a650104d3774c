"""The item record: what the catalog knows of one item, and its Redis contract.

An item record (``schemas/item.v1.json``) travels on the compacted items
topic keyed by item id (:func:`as_message`); the worker's item agent validates
it (:func:`schemas.validator.validate_item`) and writes it into Redis, where
the API reads it. Keys, under the prefix ``P``, all with the hash tag
``{catalog}`` so that one script can write them together on a Redis Cluster:

``P{catalog}:items``
    A hash: item id -> the record as JSON (:func:`encode_record`). The newest
    record of an item (by ``ts``) wins; an older one is refused by the
    writer's script, so a replay never rolls an item back.
``P{catalog}:unavailable``
    A set: the ids of the items whose newest record says ``available: false``.
``P{catalog}:takedown``
    A hash whose one field ``data`` holds ``<revision>\\n<JSON array of the
    unavailable ids>`` (a hash, read with ``HGET`` like the lists it travels with)
    (:func:`decode_takedown`). The revision grows with every record written,
    so a reader learns from this one small value both the items taken down
    and whether the catalog changed. The API reads it in the same round trip
    as every list it serves and filters what it answers by it; the worker
    reads it with every batch and leaves those items out of the lists it
    writes. It is meant to stay small (the items taken down, not the
    catalog).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from freshrec.settings import Settings


@dataclass(slots=True)
class ItemRecord:
    """One item's catalog record, as validated against ``item.v1.json``."""

    item_id: str
    ts: int
    title: str | None = None
    tags: tuple[str, ...] = ()
    available: bool = True
    attrs: Mapping[str, str] = field(default_factory=dict)
    type: str = "item"


def record_dict(record: ItemRecord) -> dict[str, Any]:
    """The record as the JSON object of its schema (unset optional fields left out)."""
    doc: dict[str, Any] = {"type": "item", "item_id": record.item_id, "ts": record.ts}
    if record.title is not None:
        doc["title"] = record.title
    if record.tags:
        doc["tags"] = list(record.tags)
    if not record.available:
        doc["available"] = False
    if record.attrs:
        doc["attrs"] = dict(record.attrs)
    return doc


def encode_record(record: ItemRecord) -> bytes:
    """The record's JSON bytes: the Kafka message value and the Redis hash value."""
    return orjson.dumps(record_dict(record))


def decode_record(data: bytes | str) -> ItemRecord:
    """A record as :func:`encode_record` wrote it; raises ``ValueError`` on garbage."""
    try:
        doc = orjson.loads(data)
        return ItemRecord(
            str(doc["item_id"]),
            int(doc["ts"]),
            doc.get("title"),
            tuple(doc.get("tags") or ()),
            bool(doc.get("available", True)),
            dict(doc.get("attrs") or {}),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a freshrec item record: {exc}") from exc


def as_message(settings: Settings, record: ItemRecord) -> tuple[str, bytes, bytes]:
    """``(topic, key, value)`` of a validated record: keyed by item id on the items topic,
    so that compaction keeps each item's newest record."""
    return settings.topic_items, record.item_id.encode(), encode_record(record)


def items_hash_key(prefix: str) -> str:
    """Redis key of the item table (see the module doc)."""
    return f"{prefix}{{catalog}}:items"


def unavailable_key(prefix: str) -> str:
    """Redis key of the set of items taken down."""
    return f"{prefix}{{catalog}}:unavailable"


def takedown_key(prefix: str) -> str:
    """Redis key of the takedown value every reader reads (see the module doc)."""
    return f"{prefix}{{catalog}}:takedown"


@dataclass(frozen=True, slots=True)
class Takedown:
    """What ``P{catalog}:takedown`` holds: the catalog's revision and the items taken down."""

    revision: int
    unavailable: frozenset[str]


NO_TAKEDOWN = Takedown(0, frozenset())


def decode_takedown(data: bytes | None, last: Takedown = NO_TAKEDOWN) -> Takedown:
    """Parse the takedown value (None: no catalog yet); raises ``ValueError`` on garbage.

    ``last`` is the reader's previous answer: when only the revision moved, its
    set is kept rather than parsed again.
    """
    if data is None:
        return NO_TAKEDOWN
    head, sep, body = data.partition(b"\n")
    try:
        revision = int(head)
        if not sep:
            raise ValueError("no newline after the revision")
        if revision == last.revision:
            return last
        ids = orjson.loads(body)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not a freshrec takedown value: {exc}") from exc
    if type(ids) not in (list, dict) or any(type(i) is not str for i in ids):
        # Lua's cjson writes an empty table as {}: an empty set either way.
        raise ValueError("not a freshrec takedown value: not a list of ids")
    unavailable = frozenset(ids)
    if unavailable == last.unavailable:
        return Takedown(revision, last.unavailable)
    return Takedown(revision, unavailable)


def encode_takedown(revision: int, unavailable: frozenset[str] | set[str]) -> bytes:
    """The takedown value's ``data`` field (what the writer's script builds on the server)."""
    return b"%d\n%b" % (revision, orjson.dumps(sorted(unavailable)))
