"""The Redis contract of the dead-letter tally: the worker adds, the ops page reads.

``P dead-letters`` (under the key prefix ``P``) is a hash: per reason
(``field/rule`` of the rejection, as ``freshrec dlq list`` groups them, e.g.
``ts/minimum``), how many messages the workers dead-lettered. The letters
themselves are on the dead-letter topic; this running total lets a page show
them by reason without reading Kafka. Like the online counts it is added in
the batch's Redis pipeline, and a resent pipeline may add a batch twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def dead_letters_key(prefix: str) -> str:
    """Redis key of the dead-letter tally."""
    return f"{prefix}dead-letters"


def decode_tally(fields: Mapping[Any, Any]) -> dict[str, int]:
    """The hash as ``HGETALL`` returns it, most frequent reason first; ``ValueError`` on
    garbage."""
    try:
        counts = {
            (k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in fields.items()
        }
    except ValueError as exc:
        raise ValueError(f"not a freshrec dead-letter tally: {exc}") from exc
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
