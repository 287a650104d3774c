"""Shift a file of events in time so that its newest event happens now.

The example files were recorded once; published as they are, a demo's lists
say they are about an old event, and the freshness metric (written time minus
the newest event's time) reads the age of the file. ``freshrec publish
--rebase-ts`` moves every event by the same amount, keeping their order and
gaps, so the newest one is stamped ``now``. The metric itself is left alone:
it measures what it is given.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from schemas.validator import Rejection, validate


def rebase(lines: Iterable[bytes], now_ms: int) -> list[bytes]:
    """``lines`` with every event's ``ts`` shifted so that the newest is ``now_ms``.

    Only valid events are moved (and re-encoded); an invalid line is kept
    byte for byte, so the publisher still rejects it with its own reason.
    """
    kept = list(lines)
    stamps: list[int | None] = []
    for line in kept:
        event = validate(line)
        stamps.append(None if isinstance(event, Rejection) else event.ts)
    known = [ts for ts in stamps if ts is not None]
    if not known:
        return kept
    shift = now_ms - max(known)
    out = []
    for line, ts in zip(kept, stamps, strict=True):
        if ts is None:
            out.append(line)
        else:
            doc = orjson.loads(line)
            doc["ts"] = ts + shift
            out.append(orjson.dumps(doc))
    return out
