"""Loader for a JSON-lines file of freshrec events (the topics' contract) into a log.

Each line is validated with :func:`schemas.validator.validate`, exactly as the
worker validates a Kafka message, so training sees the same events the worker
accepted: invalid lines are skipped and counted (with the first reasons kept
for the report), duplicate ``event_id`` s are dropped, and a ``forget`` event
removes every event of its user at or before the forget's ``ts``, wherever the
line stands in the file, as the worker's forget marker does (an event that
arrives after the forget but carries an older ``ts`` is a redelivery or a
replay, not new history).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freshrec.errors import BadInputError
from models.interactions import InteractionLog
from schemas.events import ForgetEvent, RateEvent, WatchEvent
from schemas.validator import Rejection, validate

#: Rejection reasons kept for the report; the rest are only counted.
MAX_REASONS = 10


@dataclass
class EventFile:
    """The log read from a file and what reading it found."""

    log: InteractionLog
    lines: int
    rejected: int
    duplicates: int
    forgotten: int  # events removed by forget events
    sha256: str
    reasons: list[str] = field(default_factory=list)  # "line N: reason", first MAX_REASONS


def load(path: str | os.PathLike[str]) -> EventFile:
    """Read and validate every line of ``path`` (see the module docstring)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    events: list[WatchEvent | RateEvent] = []
    alive: list[bool] = []
    by_user: dict[str, list[int]] = {}  # positions in ``events`` per user, for forget
    forgotten_at: dict[str, int] = {}  # newest forget ``ts`` per user
    seen: set[str] = set()
    rejected = duplicates = forgotten = lines = 0
    reasons: list[str] = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        lines += 1
        event = validate(line)
        if isinstance(event, Rejection):
            rejected += 1
            if len(reasons) < MAX_REASONS:
                reasons.append(f"line {lineno}: {event}")
            continue
        if event.event_id in seen:
            duplicates += 1
            continue
        seen.add(event.event_id)
        if isinstance(event, ForgetEvent):
            cutoff = max(event.ts, forgotten_at.get(event.user_id, 0))
            forgotten_at[event.user_id] = cutoff
            for pos in by_user.get(event.user_id, []):
                if alive[pos] and events[pos].ts <= cutoff:
                    alive[pos] = False
                    forgotten += 1
            continue
        if event.ts <= forgotten_at.get(event.user_id, -1):
            forgotten += 1
            continue
        by_user.setdefault(event.user_id, []).append(len(events))
        events.append(event)
        alive.append(True)
    kept = [e for e, keep in zip(events, alive, strict=True) if keep]
    if not kept:
        raise BadInputError(f"{path} holds no valid watch or rate event ({rejected} rejected)")
    log = InteractionLog.from_columns(
        [e.user_id for e in kept],
        [e.item_id for e in kept],
        [e.type for e in kept],
        np.array([e.watched_s if isinstance(e, WatchEvent) else e.rating for e in kept]),
        [e.duration_s if isinstance(e, WatchEvent) else None for e in kept],
        [e.ts for e in kept],
    )
    return EventFile(
        log, lines, rejected, duplicates, forgotten, hashlib.sha256(raw).hexdigest(), reasons
    )
