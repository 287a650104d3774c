"""Pre-model popularity over the held histories."""

from __future__ import annotations

from schemas.state import Interaction
from streams.popularity import Popularity


def w(item: str, ts: int) -> Interaction:
    return Interaction(item, "watch", 600.0, 1200.0, ts)


def test_popularity_counts_users_per_item_and_breaks_ties_by_id() -> None:
    pop = Popularity()
    pop.rebuild([[w("b", 1), w("b", 2)], [w("b", 3), w("a", 4)]])
    pop.add(["c"])
    assert pop.top(3) == [("b", 2.0), ("a", 1.0), ("c", 1.0)]
