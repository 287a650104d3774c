"""Turn a batch of user states into their encoded lists: one batched fold-in for the whole batch.

With a model, every user of the batch goes through a single
:meth:`Recommender.recommend` call (one batched solve, one matrix product,
seen items masked, top-k with explanations). Without one, each user gets the
worker's local popularity, minus what they already interacted with, marked
``source="popular"``.

Lists come out already encoded, in exactly the bytes :func:`schemas.recs.encode`
writes (a test holds the two together): going through ``RecItem`` objects
costs a frozen-dataclass construction per item, 150 items per user, which was
most of a batch's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from models.weighting import user_confidences
from schemas.recs import Source, order_token
from streams.model_follower import ModelFollower
from streams.popularity import Popularity
from streams.state import UserState


@dataclass(frozen=True, slots=True)
class UserList:
    """One user's list ready for Redis: the ``order`` token and the ``data`` field."""

    user: str
    order: str
    data: bytes


def encode_list(
    user: str | None,
    source: Source,
    model_version: str | None,
    updated_at: int,
    written_at: int,
    items: Sequence[str],
    scores: Sequence[float],
    because: Sequence[str | None],
) -> bytes:
    """The ``data`` field of a list, identical to ``schemas.recs.encode`` of the same list."""
    entries: list[dict[str, Any]] = [
        {"item": i, "score": s} if b is None else {"item": i, "score": s, "because": b}
        for i, s, b in zip(items, scores, because, strict=True)
    ]
    return orjson.dumps(
        {
            "user": user,
            "source": source,
            "model_version": model_version,
            "updated_at": updated_at,
            "written_at": written_at,
            "items": entries,
        }
    )


class ListBuilder:
    """Builds users' lists of ``list_length`` items."""

    def __init__(self, list_length: int, follower: ModelFollower, popularity: Popularity) -> None:
        self._n = list_length
        self._follower = follower
        self._popularity = popularity

    def build(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[UserList]:
        """The lists of ``users`` (same order), stamped with each state's newest event."""
        if not users:
            return []
        recommender = self._follower.recommender
        if recommender is None:
            return self._popular(users, states, written_at)
        histories = [user_confidences(state.history) for state in states]
        recs = recommender.recommend(histories, self._n, exclude_seen=True)
        version = recommender.version_id
        lists = []
        for row, (user, state) in enumerate(zip(users, states, strict=True)):
            source: Source = "personal" if recs.personal[row] else "popular"
            data = encode_list(
                user, source, version, state.newest_ts, written_at,
                recs.items[row], recs.scores[row], recs.because[row],
            )
            lists.append(UserList(user, order_token(state.newest_ts, version), data))
        return lists

    def _popular(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[UserList]:
        # One ranking for the batch, long enough that excluding any one user's
        # history still leaves ``n`` items.
        longest = max(len(s.history) for s in states)
        ranked = self._popularity.top(self._n + longest)
        lists = []
        for user, state in zip(users, states, strict=True):
            seen = {i.item_id for i in state.history}
            kept = [(item, score) for item, score in ranked if item not in seen][: self._n]
            data = encode_list(
                user, "popular", None, state.newest_ts, written_at,
                [item for item, _ in kept], [score for _, score in kept], [None] * len(kept),
            )
            lists.append(UserList(user, order_token(state.newest_ts, None), data))
        return lists
