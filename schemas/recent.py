"""The user's own recent history, stored beside their list: the ``recent`` field of
``P recs:<user_id>`` (:mod:`schemas.recs` names the key and its other fields).

Why beside the list: a page or a client showing a list wants to show what it
was made from (issue 26, item 8: "show the user's own recent history beside
the list"), and the API has no other store of a user's events. The worker
writes this field with the list, in the same compare-and-set script call
(:mod:`streams.sink`), so the history shown is the one the list was made
from, never rolled back by a replay; the API reads it with the list, in the
same round trip, when asked (``GET /recs/{user}?recent=n``, docs/api.md).

The value: the user's newest :data:`RECENT_LENGTH` distinct items, newest
first, each once (at its newest interaction), as a JSON array of
``{"item", "ts", "kind"}`` objects (``ts`` in epoch ms, ``kind`` ``watch`` or
``rate``): the shape the API serves, so the API only cuts it to ``n``. About
45 bytes an item, 450 for ten, beside a compact list's 800-1,000: a listpack
would not hold the hash anyway (the list is past ``hash-max-listpack-value``),
and ten ids need no item table. A list written by a worker that predates the
field has none: readers treat a missing field as an empty history.

This module is the field's one codec: :func:`encode` for the worker,
:func:`decode` for the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from schemas.state import Interaction

#: The hash field of ``P recs:<user_id>`` holding the user's recent history.
RECENT_FIELD = "recent"
#: Distinct items stored, newest first: what ``?recent=`` may ask for at most.
RECENT_LENGTH = 10
_KINDS = frozenset({"watch", "rate"})


@dataclass(frozen=True, slots=True)
class RecentItem:
    """One item of the user's recent history, at its newest interaction."""

    item: str
    ts: int  # epoch milliseconds
    kind: str  # "watch" or "rate"


def newest_items(history: Sequence[Interaction], n: int = RECENT_LENGTH) -> list[RecentItem]:
    """The newest ``n`` distinct items of ``history`` (oldest first, as a user state keeps
    it), newest first, each at its newest interaction."""
    out: list[RecentItem] = []
    seen: set[str] = set()
    for row in reversed(history):
        if row.item_id in seen:
            continue
        seen.add(row.item_id)
        out.append(RecentItem(row.item_id, row.ts, row.kind))
        if len(out) == n:
            break
    return out


def encode(items: Sequence[RecentItem]) -> bytes:
    """Serialise for the ``recent`` field."""
    return orjson.dumps([{"item": i.item, "ts": i.ts, "kind": i.kind} for i in items])


def encode_history(history: Sequence[Interaction], n: int = RECENT_LENGTH) -> bytes:
    """:func:`encode` of :func:`newest_items`: what the worker writes for a user state."""
    return encode(newest_items(history, n))


def decode(data: bytes | str | None, n: int = RECENT_LENGTH) -> list[dict[str, Any]]:
    """The first ``n`` entries of a ``recent`` field as the API serves them (``[]`` for a
    missing field); raises ``ValueError`` for anything :func:`encode` does not write."""
    if data is None:
        return []
    try:
        entries = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not a freshrec recent history: {exc}") from exc
    if type(entries) is not list:
        raise ValueError("not a freshrec recent history: not an array")
    out = []
    for entry in entries[:n]:
        if (
            type(entry) is not dict
            or type(entry.get("item")) is not str
            or type(entry.get("ts")) is not int
            or entry.get("kind") not in _KINDS
        ):
            raise ValueError(f"not a freshrec recent history: bad entry {entry!r:.80}")
        out.append({"item": entry["item"], "ts": entry["ts"], "kind": entry["kind"]})
    return out
