"""The Redis contract of the online metrics: the worker adds, ``freshrec models online`` reads.

One hash per model version and arm, under the key prefix ``P``:

``P online:<model version>:<arm>``
    ``arm`` is ``current``, or ``canary`` for the candidate of a canary
    release. Fields, each a running total over every worker:

    ``events``
        watch and rate events of users whose last written list (its top
        ``FRESHREC_ONLINE_TOP_K`` items, kept in their state) was made by this
        version and arm, under the pointer generation still in force;
    ``hits10``, ``hitsk``
        of those, events on an item in the list's top 10, in its top k;
    ``rr``
        the sum of 1/rank over the hits (rank 1-based): the mean reciprocal rank
        is ``rr / events``;
    ``rated``, ``rating``
        rate events on an item of the top k, and the sum of their ratings (the
        mean rating users gave to what they were recommended);
    ``k``
        the top k in force when last counted.

The worker adds a batch's totals with ``HINCRBY``/``HINCRBYFLOAT`` in the
pipeline that writes the batch's lists. A pipeline resent after a dropped
connection may add a batch twice: the figures are for judging a model, not
for accounting, and a double count of one batch in thousands moves no rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Field names of the hash, in the order :class:`OnlineCounts` holds them.
FIELDS = ("events", "hits10", "hitsk", "rr", "rated", "rating", "k")


def online_key(prefix: str, version: str, arm: str) -> str:
    """Redis key of one model version's and arm's online counts."""
    return f"{prefix}online:{version}:{arm}"


def parse_key(prefix: str, key: str) -> tuple[str, str] | None:
    """``(version, arm)`` of an :func:`online_key`; None for another key."""
    if not key.startswith(f"{prefix}online:"):
        return None
    version, sep, arm = key[len(prefix) + len("online:") :].rpartition(":")
    return (version, arm) if sep and version and arm else None


@dataclass(frozen=True, slots=True)
class OnlineCounts:
    """One version's and arm's totals (see the module doc for each field)."""

    events: int = 0
    hits10: int = 0
    hitsk: int = 0
    rr: float = 0.0
    rated: int = 0
    rating: float = 0.0
    k: int = 0

    def increments(self) -> list[tuple[str, int | float]]:
        """The non-zero fields as ``(field, amount)``, for ``HINCRBY``/``HINCRBYFLOAT``."""
        return [(name, getattr(self, name)) for name in FIELDS if getattr(self, name)]


def decode_counts(fields: Mapping[Any, Any]) -> OnlineCounts:
    """A hash as ``HGETALL`` returns it; missing fields are 0, ``ValueError`` on garbage."""
    values = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    try:
        return OnlineCounts(
            events=int(values.get("events", 0)),
            hits10=int(values.get("hits10", 0)),
            hitsk=int(values.get("hitsk", 0)),
            rr=float(values.get("rr", 0.0)),
            rated=int(values.get("rated", 0)),
            rating=float(values.get("rating", 0.0)),
            k=int(values.get("k", 0)),
        )
    except ValueError as exc:
        raise ValueError(f"not freshrec online counts: {exc}") from exc
