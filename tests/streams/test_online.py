"""The online metrics' arithmetic (issue 24, item 3): totals per version and arm."""

from __future__ import annotations

import pytest

from schemas.online import OnlineCounts
from schemas.state import ShownList
from streams.online import Exposure, combine, tally

A = ShownList(5, "vA", "current", tuple(f"i{n}" for n in range(20)))
B = ShownList(5, "vB", "canary", ("i0", "i1"))
STALE = ShownList(4, "vOld", "current", ("i0",))


def test_tally_counts_hits_in_the_top_10_and_k_rank_and_ratings_per_version_and_arm() -> None:
    exposures = [
        Exposure("u1", A, 1, None),  # hit at 1
        Exposure("u2", A, 15, 4.0),  # in the top k only, rated
        Exposure("u3", A, None, 2.0),  # a miss: a rating of something not recommended
        Exposure("u4", B, 2, 5.0),
        Exposure("u5", STALE, 1, None),  # made under an earlier generation: not counted
    ]
    totals = tally(exposures, generation=5)
    assert set(totals) == {("vA", "current"), ("vB", "canary")}
    a = totals["vA", "current"]
    assert (a.events, a.hits10, a.hitsk, a.rated, a.rating, a.k) == (3, 1, 2, 1, 4.0, 20)
    assert a.rr == pytest.approx(1 + 1 / 15)
    b = totals["vB", "canary"]
    assert (b.events, b.hits10, b.hitsk, b.rr, b.rated, b.rating) == (1, 1, 1, 0.5, 1, 5.0)


def test_combine_adds_two_halves() -> None:
    one = {("v", "current"): OnlineCounts(2, 1, 1, 0.5, 1, 3.0, 20)}
    two = {
        ("v", "current"): OnlineCounts(1, 0, 1, 0.1, 0, 0.0, 20),
        ("w", "canary"): OnlineCounts(1),
    }
    both = combine(one, two)
    v = both["v", "current"]
    assert (v.events, v.hits10, v.hitsk, v.rated, v.rating, v.k) == (3, 1, 2, 1, 3.0, 20)
    assert v.rr == pytest.approx(0.6)
    assert both["w", "canary"] == OnlineCounts(1)
