"""Online figures from counts: Wilson intervals with known values."""

from __future__ import annotations

import pytest

from models.online import OnlineFigures, wilson
from schemas.online import OnlineCounts


def test_wilson_matches_known_values_and_stays_inside_0_1() -> None:
    # 5 of 100 at 95%: the textbook [0.0215, 0.1118]
    low, high = wilson(5, 100)
    assert low == pytest.approx(0.02154, abs=1e-4) and high == pytest.approx(0.11175, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(0, 0) == (0.0, 1.0)


def test_figures_of_counts() -> None:
    f = OnlineFigures.of(OnlineCounts(200, 10, 30, 4.0, 8, 34.0, 20))
    assert (f.events, f.hit_rate10, f.hit_ratek, f.mrr, f.mean_rating) == (
        200,
        0.05,
        0.15,
        0.02,
        4.25,
    )
    assert f.hit_rate10_ci[0] < 0.05 < f.hit_rate10_ci[1]
    assert OnlineFigures.of(OnlineCounts()).mean_rating is None
