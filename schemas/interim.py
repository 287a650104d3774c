"""The contracts of items the model does not know yet (issue 23): contributions, item
statistics, and the interim vectors every worker reads.

Three records, each with its one codec here:

- **A contribution message** (topic ``FRESHREC_TOPIC_CONTRIBUTIONS``, keyed by
  item id, written by the fold-in agent, read by the item agent): one item's
  entries from one batch, under one model version. An entry is one event of a
  user on the item (or a forget of that user): the user, the event's source
  partition as ``"topic:partition"`` and offset (its stamp), the contribution
  it takes back (the user's previous one to the item under this version, or
  none) and the one it adds (none after a forget). A contribution is
  ``(c, x)``: the stored confidence (``alpha`` times the combined weight) and
  the user's vector just after the event. JSON::

      {"f": 1, "v": version, "i": item,
       "e": [[user, "topic:partition", offset, [c, [x...]] | null, [c, [x...]] | null]]}

- **An item's statistics** (the item agent's table and its changelog, keyed by
  :func:`stats_key`): ``users``, the epoch ms of the first entry, the newest
  stamp applied per source partition (the watermark: an entry at or below it
  is a redelivery, not counted twice), then ``a`` (``f x f``) and ``b``
  (``f``) as little-endian float64. Binary: ``0x01``, a 4-byte length and a
  JSON header ``{"n": users, "t": first_ms, "w": {tp: offset}, "f": factors}``,
  then the floats.

- **An interim vector** (Redis hash ``P interim:<version>``, field the item
  id; :func:`interim_key`), what every worker ranks with. JSON::

      {"f": 1, "source": "fold" | "content", "users": n, "first_ms": ms,
       "at_ms": ms, "vector": [floats]}

  ``source`` says where the vector comes from: ``fold`` (item fold-in from its
  users) or ``content`` (built from its tags before its first user). Any
  writer raises the version's generation (:func:`generation_key`, ``INCR``)
  after writing, which is what workers poll to know to reread the hash. A
  writer of ``content`` vectors must not overwrite a ``fold`` one.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

#: Where an interim vector comes from (the store record's ``source``).
VectorSource = Literal["fold", "content"]

#: One contribution: the stored confidence and the user's vector.
Contribution = tuple[float, tuple[float, ...]]

_FORMAT = 1


def interim_key(prefix: str, version: str) -> str:
    """Redis hash of a model version's interim item vectors (field: item id)."""
    return f"{prefix}interim:{version}"


def generation_key(prefix: str, version: str) -> str:
    """Redis counter raised after each write to :func:`interim_key` of the version."""
    return f"{prefix}interim-generation:{version}"


#: The item agent's table of item statistics (its changelog is Faust's naming).
STATS_TABLE = "item-stats"


def stats_changelog_topic(app_id: str) -> str:
    """The changelog topic of the item agent's table."""
    return f"{app_id}-{STATS_TABLE}-changelog"


def stats_key(version: str, item: str) -> bytes:
    """The item agent's table key of an item's statistics under a model version."""
    return f"{version}\n{item}".encode()


def split_stats_key(key: bytes) -> tuple[str, str]:
    """``(version, item)`` of a :func:`stats_key`."""
    version, _, item = key.decode().partition("\n")
    return version, item


@dataclass(frozen=True, slots=True)
class Entry:
    """One event's (or forget's) change to an item's statistics."""

    user: str
    source: str
    """``"topic:partition"`` of the event."""
    offset: int
    old: Contribution | None
    new: Contribution | None


@dataclass(frozen=True, slots=True)
class ContributionMessage:
    """One item's entries of one batch, under one model version."""

    version: str
    item: str
    entries: list[Entry]

    @property
    def factors(self) -> int:
        """The vectors' length (of the first entry that has one)."""
        for e in self.entries:
            for c in (e.new, e.old):
                if c is not None:
                    return len(c[1])
        return 0


def _contribution(value: Any) -> Contribution | None:
    if value is None:
        return None
    c, x = value
    return float(c), tuple(float(v) for v in x)


def encode_message(message: ContributionMessage) -> bytes:
    """The contribution topic's value."""
    return orjson.dumps(
        {
            "f": _FORMAT,
            "v": message.version,
            "i": message.item,
            "e": [[e.user, e.source, e.offset, e.old, e.new] for e in message.entries],
        }
    )


def decode_message(raw: bytes) -> ContributionMessage:
    """Inverse of :func:`encode_message`; ``ValueError`` saying why when unreadable."""
    try:
        doc = orjson.loads(raw)
        if doc.get("f") != _FORMAT:
            raise ValueError(f"format {doc.get('f')!r}, this code reads {_FORMAT}")
        entries = [
            Entry(str(u), str(tp), int(o), _contribution(old), _contribution(new))
            for u, tp, o, old, new in doc["e"]
        ]
        return ContributionMessage(str(doc["v"]), str(doc["i"]), entries)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"unreadable contribution message: {exc}") from exc


@dataclass(slots=True)
class StatsRecord:
    """An item's statistics as the item agent stores them (module doc)."""

    a: np.ndarray
    b: np.ndarray
    users: int = 0
    first_ms: int = 0
    watermarks: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, factors: int) -> StatsRecord:
        return cls(np.zeros((factors, factors)), np.zeros(factors))


_LENGTH = struct.Struct("<I")


def encode_stats(record: StatsRecord) -> bytes:
    """The item agent's changelog value (module doc)."""
    f = record.b.shape[0]
    head = orjson.dumps({"n": record.users, "t": record.first_ms, "w": record.watermarks, "f": f})
    return b"".join(
        (
            bytes((_FORMAT,)),
            _LENGTH.pack(len(head)),
            head,
            np.ascontiguousarray(record.a, dtype="<f8").tobytes(),
            np.ascontiguousarray(record.b, dtype="<f8").tobytes(),
        )
    )


def decode_stats(raw: bytes) -> StatsRecord:
    """Inverse of :func:`encode_stats`; ``ValueError`` saying why when unreadable."""
    if raw[:1] != bytes((_FORMAT,)):
        raise ValueError("unreadable item statistics: unknown format")
    try:
        (size,) = _LENGTH.unpack_from(raw, 1)
        start = 1 + _LENGTH.size
        head = orjson.loads(raw[start : start + size])
        f = int(head["f"])
        floats = np.frombuffer(raw, dtype="<f8", offset=start + size)
        if floats.size != f * f + f:
            raise ValueError(f"{floats.size} numbers for {f} factors")
        return StatsRecord(
            floats[: f * f].reshape(f, f).copy(),
            floats[f * f :].copy(),
            int(head["n"]),
            int(head["t"]),
            {str(k): int(v) for k, v in head["w"].items()},
        )
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unreadable item statistics: {exc}") from exc


@dataclass(frozen=True, slots=True)
class InterimVector:
    """One item's interim vector, as every worker reads it (module doc)."""

    vector: np.ndarray
    source: VectorSource
    users: int
    first_ms: int
    at_ms: int


def encode_vector(v: InterimVector) -> bytes:
    """The Redis hash value of an interim vector."""
    return orjson.dumps(
        {
            "f": _FORMAT,
            "source": v.source,
            "users": v.users,
            "first_ms": v.first_ms,
            "at_ms": v.at_ms,
            "vector": np.asarray(v.vector, dtype=np.float32).tolist(),
        }
    )


def decode_vector(raw: bytes | str) -> InterimVector:
    """Inverse of :func:`encode_vector`; ``ValueError`` saying why when unreadable."""
    try:
        doc = orjson.loads(raw)
        if doc.get("f") != _FORMAT or doc["source"] not in ("fold", "content"):
            raise ValueError(f"format {doc.get('f')!r} / source {doc.get('source')!r}")
        return InterimVector(
            np.asarray(doc["vector"], dtype=np.float32),
            doc["source"],
            int(doc["users"]),
            int(doc["first_ms"]),
            int(doc["at_ms"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable interim vector: {exc}") from exc


def decode_vectors(mapping: Mapping[Any, Any]) -> dict[str, InterimVector]:
    """A whole :func:`interim_key` hash, the unreadable fields left out."""
    out = {}
    for key, raw in mapping.items():
        item = key.decode() if isinstance(key, bytes) else str(key)
        try:
            out[item] = decode_vector(raw)
        except ValueError:
            continue
    return out
