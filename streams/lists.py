"""Turn a batch of user states into their ranked lists: one batched fold-in for the whole batch.

With a model, every user of the batch goes through a single
:meth:`Recommender.recommend` call (one batched solve, one matrix product,
seen items masked, top-k with explanations). Without one, each user gets the
worker's local popularity, minus what they already interacted with, marked
``source="popular"``.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.weighting import user_confidences
from schemas.recs import RecItem, RecList
from streams.model_follower import ModelFollower
from streams.popularity import Popularity
from streams.state import UserState


class ListBuilder:
    """Builds :class:`RecList` values of ``list_length`` items."""

    def __init__(self, list_length: int, follower: ModelFollower, popularity: Popularity) -> None:
        self._n = list_length
        self._follower = follower
        self._popularity = popularity

    def build(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[RecList]:
        """The lists of ``users`` (same order), stamped with each state's newest event."""
        if not users:
            return []
        recommender = self._follower.recommender
        if recommender is None:
            return self._popular(users, states, written_at)
        histories = [user_confidences(state.history) for state in states]
        recs = recommender.recommend(histories, self._n, exclude_seen=True)
        lists = []
        for row, (user, state) in enumerate(zip(users, states, strict=True)):
            items = tuple(
                RecItem(str(item), float(score), because)
                for item, score, because in zip(
                    recs.items[row], recs.scores[row], recs.because[row], strict=True
                )
            )
            source = "personal" if recs.personal[row] else "popular"
            lists.append(
                RecList(user, source, recommender.version_id, state.newest_ts, written_at, items)
            )
        return lists

    def _popular(
        self, users: Sequence[str], states: Sequence[UserState], written_at: int
    ) -> list[RecList]:
        # One ranking for the batch, long enough that excluding any one user's
        # history still leaves ``n`` items.
        longest = max(len(s.history) for s in states)
        ranked = self._popularity.top(self._n + longest)
        lists = []
        for user, state in zip(users, states, strict=True):
            seen = {i.item_id for i in state.history}
            items = tuple(
                RecItem(item, score) for item, score in ranked if item not in seen
            )[: self._n]
            lists.append(RecList(user, "popular", None, state.newest_ts, written_at, items))
        return lists
