"""Turn a batch of user states into their encoded lists: one batched fold-in for the whole batch.

With a model, every user of the batch goes through a single
:meth:`Recommender.rank` call (one batched solve, one matrix product, seen
items masked, top-k with explanations), their events combined with the
model's own weighting rule (the one it was trained with). Without one, each
user gets the worker's local popularity, marked ``source="popular"``.

A list never holds an item the user interacted with: the history's items,
and the items the history cap dropped (``UserState.seen_items``), are left
out of personal and popular lists alike.

Nor does it hold an item taken down (:attr:`ListBuilder.unavailable`, the
takedown set the worker reads with each batch: :mod:`streams.catalog`); the
API filters those at serve time anyway, within a second of the takedown, and
this keeps lists written afterwards free of them.

Lists come out already encoded. A list the model ranked is in the contract's
compact format, from the model's index arrays (:meth:`Recommender.rank`), the
whole batch at once by :meth:`schemas.recs.ItemTable.encode` (one per model
version); so is a user's popular fallback under a model. Lists made without a
model are JSON (:func:`schemas.recs.encode_list`): they name items no model
table holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from models.weighting import WeightingConfig, user_confidences
from schemas.recs import ItemTable, encode_list, order_token
from schemas.state import UserState
from streams.model_follower import ModelFollower
from streams.popularity import Popularity


@dataclass(frozen=True, slots=True)
class UserList:
    """One user's list ready for Redis: the ``order`` token and the ``data`` field."""

    user: str
    order: str
    data: bytes


def _unranked(
    states: Sequence[UserState], histories: Sequence[dict[str, float]]
) -> list[list[str]]:
    """Per user, the items they interacted with that their confidences leave out: those
    the history cap dropped (``seen_items``) and those of confidence 0 (skims), which
    the model's own exclusion of the history does not cover."""
    out = []
    for state, confidences in zip(states, histories, strict=True):
        zero = [i.item_id for i in state.history if i.item_id not in confidences]
        out.append(zero + state.seen_items if zero else state.seen_items)
    return out


#: Users' confidences under a weighting, from their states (same order): the
#: worker's come from its state cache (:meth:`streams.state.StateTable.confidences`).
Histories = Callable[
    [Sequence[str], Sequence[UserState], WeightingConfig], Sequence[dict[str, float]]
]


def _computed(
    users: Sequence[str], states: Sequence[UserState], weighting: WeightingConfig
) -> list[dict[str, float]]:
    return [user_confidences(state.history, weighting) for state in states]


class ListBuilder:
    """Builds users' lists of ``list_length`` items."""

    def __init__(
        self,
        list_length: int,
        follower: ModelFollower,
        popularity: Popularity,
        histories: Histories = _computed,
    ) -> None:
        self._n = list_length
        self._histories = histories
        self._follower = follower
        self._popularity = popularity
        #: The list encoder of the current model version.
        self._table: ItemTable | None = None
        #: Items taken down: left out of every list built (set before each build).
        self.unavailable: frozenset[str] = frozenset()

    def build(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[UserList]:
        """The lists of ``users`` (same order), stamped with each state's newest event."""
        if not users:
            return []
        recommender = self._follower.recommender
        if recommender is None:
            return self._popular(users, states, written_at)
        histories = self._histories(users, states, recommender.weighting)
        exclude = _unranked(states, histories)
        down = self.unavailable
        if down:
            exclude = [[*items, *down] for items in exclude]
        ranking = recommender.rank(histories, self._n, exclude_seen=True, exclude=exclude)
        table = self._table
        if table is None or table.version != recommender.version_id:
            table = self._table = ItemTable(recommender.version_id, recommender.item_ids.ids)
        stamps = [state.newest_ts for state in states]
        personal = ranking.personal
        data = table.encode(
            ranking.items, ranking.scores, ranking.because, personal, stamps, written_at
        )
        fallback = np.flatnonzero(~personal).tolist()
        if fallback:  # no usable history: the model's popular list, one encode for them all
            items = np.full((len(users), self._n), -1, dtype=np.int64)
            scores = np.zeros((len(users), self._n), dtype=np.float32)
            for row in fallback:
                names, values = recommender.fallback(ranking.seen(row), self._n + len(down))
                if down:
                    kept = [(i, v) for i, v in zip(names, values, strict=True) if i not in down]
                    names, values = [i for i, _ in kept][: self._n], [v for _, v in kept][: self._n]
                indices = recommender.item_ids.indices(names)
                known = indices >= 0  # the model's popular items are its own: all, but be sure
                items[row, : known.sum()] = indices[known]
                scores[row, : known.sum()] = np.asarray(values, dtype=np.float32)[known]
            because = np.full_like(items, -1)
            popular = table.encode(items, scores, because, ~personal, stamps, written_at, "popular")
            data = [p if d is None else d for d, p in zip(data, popular, strict=True)]
        version = recommender.version_id
        # every row is personal or a fallback, so every one has its list
        return [
            UserList(user, order_token(stamp, version), body)
            for user, stamp, body in zip(users, stamps, data, strict=True)
            if body is not None
        ]

    def _popular(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[UserList]:
        # One ranking for the batch, long enough that excluding any one user's
        # history still leaves ``n`` items.
        longest = max(len(s.history) + len(s.seen_items) for s in states)
        down = self.unavailable
        ranked = self._popularity.top(self._n + longest + len(down))
        lists = []
        for user, state in zip(users, states, strict=True):
            seen = state.items() | down if down else state.items()
            kept = [(item, score) for item, score in ranked if item not in seen][: self._n]
            data = encode_list(
                user,
                "popular",
                None,
                state.newest_ts,
                written_at,
                [item for item, _ in kept],
                [score for _, score in kept],
                [None] * len(kept),
            )
            lists.append(UserList(user, order_token(state.newest_ts, None), data))
        return lists
