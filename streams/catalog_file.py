"""A catalog file (JSON lines, or CSV with a header) as item records to publish.

``freshrec catalog publish FILE`` reads it through :func:`read_records` and
sends each record with the :class:`~streams.publisher.Publisher`, which
validates it against ``item.v1.json``: a file is one way to publish the
catalog, never a source of its own. What a file may say beyond the schema, so
that catalogs written for the API's old ``--catalog`` load unchanged:

* ``id`` stands for ``item_id``; a missing ``ts`` is the time of the publish
  (a catalog file is a snapshot of now);
* CSV (``*.csv``): the header names the columns; ``tags`` are separated by
  ``|``; ``available`` is ``true``/``false`` (or ``1``/``0``, ``yes``/``no``;
  empty: true); every other non-empty column becomes an attribute;
* JSON lines (any other name): one record object per line; ``tags`` may be a
  list or a ``|``-separated string.

A line that is not a record (bad JSON, a bad value) is passed on as it is, for
the validator to say why it is refused, with the line number kept by position.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson

#: CSV and JSON spellings of ``available``.
_TRUTH = {"true": True, "1": True, "yes": True, "": True, "false": False, "0": False, "no": False}
#: Columns of a CSV row that are record fields, not attributes.
_FIELDS = frozenset({"type", "item_id", "id", "ts", "title", "tags", "available"})


def read_records(name: str, raw: bytes, now_ms: int) -> Iterator[tuple[int, Any]]:
    """``(line number, record)`` for every record of the file's bytes (format by ``name``):
    a dict when the line reads as one, else the line's bytes."""
    if name.lower().endswith(".csv"):
        yield from _csv(raw, now_ms)
        return
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield number, line
            continue
        yield number, _normalised(doc, now_ms) if isinstance(doc, dict) else line


def _normalised(doc: dict[str, Any], now_ms: int) -> dict[str, Any]:
    out = dict(doc)
    if "id" in out and "item_id" not in out:
        out["item_id"] = out.pop("id")
    out.setdefault("ts", now_ms)
    tags = out.get("tags")
    if isinstance(tags, str):
        out["tags"] = [t for t in tags.split("|") if t]
    return out


def _csv(raw: bytes, now_ms: int) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig", errors="replace")))
    for row in reader:
        number = reader.line_num
        doc: dict[str, Any] = {}
        attrs = {k: v for k, v in row.items() if k and k not in _FIELDS and v}
        for key in ("item_id", "id", "title"):
            if row.get(key):
                doc[key] = row[key]
        if row.get("ts"):
            doc["ts"] = int(row["ts"]) if row["ts"].strip().isdigit() else row["ts"]
        if row.get("tags"):
            doc["tags"] = row["tags"]
        available = (row.get("available") or "").strip().lower()
        doc["available"] = _TRUTH.get(available, available)
        if attrs:
            doc["attrs"] = attrs
        yield number, _normalised(doc, now_ms)
