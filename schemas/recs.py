"""The Redis contract between the worker (writer) and the API (reader).

Keys, all under the configurable prefix ``P`` (``FRESHREC_KEY_PREFIX``):

``P recs:<user_id>``
    A hash for one user's list, with two fields:

    ``data``
        the :class:`RecList` as JSON (see :func:`encode`); the API reads this
        one field with one ``HGET``.
    ``order``
        ``"<newest event ts ms, 15 digits>|<model version>"``; a writer replaces
        the list only when its own order string is not smaller, compared in one
        atomic script, so a replay or a late zombie worker never rolls a user
        back, while a newer model version for the same events does win.
``P popular``
    The same hash shape holding the popular fallback (``user`` is null,
    ``source`` is ``"popular"``).
``P epoch``
    A string: a random token that names the data Redis holds now. The first
    worker to find it missing writes it; a Redis that restarted empty or was
    flushed loses it with the lists, so a worker that finds a token other than
    the one it saw last knows its lists are gone and writes them again. The
    API never reads it.

Model version ids sort lexicographically in creation order, which is what makes
the ``order`` comparison mean "newer".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Source = Literal["personal", "popular"]

DATA_FIELD = "data"
ORDER_FIELD = "order"


def user_key(prefix: str, user_id: str) -> str:
    """Redis key of one user's list."""
    return f"{prefix}recs:{user_id}"


def popular_key(prefix: str) -> str:
    """Redis key of the popular fallback list."""
    return f"{prefix}popular"


def epoch_key(prefix: str) -> str:
    """Redis key of the token that names the data Redis holds now (see the module doc)."""
    return f"{prefix}epoch"


def order_token(newest_event_ts: int, model_version: str | None) -> str:
    """The string a writer compares to decide whether its list is newer than the stored one.

    The timestamp is zero-padded so that string order equals numeric order.
    """
    return f"{max(0, newest_event_ts):015d}|{model_version or ''}"


def order_model_version(token: str) -> str | None:
    """The model version an :func:`order_token` names (None for a list made without a model)."""
    return token.partition("|")[2] or None


@dataclass(frozen=True, slots=True)
class RecItem:
    """One recommended item; ``because`` is the history item that contributed most."""

    item: str
    score: float
    because: str | None = None


@dataclass(frozen=True, slots=True)
class RecList:
    """A user's ranked list as stored in Redis and served by the API.

    ``updated_at`` is the timestamp (epoch ms) of the newest event the list
    includes; ``written_at`` is when the writer stored it (epoch ms), so
    ``written_at - updated_at`` is the list's freshness lag.
    """

    user: str | None
    source: Source
    model_version: str | None
    updated_at: int
    written_at: int
    items: tuple[RecItem, ...] = field(default_factory=tuple)

    @property
    def order(self) -> str:
        return order_token(self.updated_at, self.model_version)


def _item_dict(item: RecItem) -> dict[str, Any]:
    out: dict[str, Any] = {"item": item.item, "score": item.score}
    if item.because is not None:
        out["because"] = item.because
    return out


def envelope(
    user: str | None,
    source: Source,
    model_version: str | None,
    updated_at: int | None,
    written_at: int | None,
    items: list[Any],
) -> dict[str, Any]:
    """A list's JSON object around already-built ``items``: the one place its fields are named.

    The worker's fast encoder and the API's renderer build their items their
    own way for speed, and wrap them with this, so the stored value and the
    response body cannot drift apart from :func:`encode`.
    """
    return {
        "user": user,
        "source": source,
        "model_version": model_version,
        "updated_at": updated_at,
        "written_at": written_at,
        "items": items,
    }


def to_dict(recs: RecList) -> dict[str, Any]:
    """The list as a JSON-ready dict (the API's response body starts from this)."""
    return envelope(
        recs.user,
        recs.source,
        recs.model_version,
        recs.updated_at,
        recs.written_at,
        [_item_dict(i) for i in recs.items],
    )


def encode(recs: RecList) -> bytes:
    """Serialise for the ``data`` field."""
    return orjson.dumps(to_dict(recs))


def decode(data: bytes | str) -> RecList:
    """Parse a ``data`` field written by :func:`encode`; raises ``ValueError`` on garbage."""
    try:
        doc = orjson.loads(data)
        items = tuple(
            RecItem(str(i["item"]), float(i["score"]), i.get("because")) for i in doc["items"]
        )
        return RecList(
            user=doc["user"],
            source=doc["source"],
            model_version=doc["model_version"],
            updated_at=int(doc["updated_at"]),
            written_at=int(doc["written_at"]),
            items=items,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a freshrec list: {exc}") from exc
