"""Item fold-in's quality (loadtests/bench_new_items.py): items introduced only through
the stream against the same items trained into the model, on planted synthetic data."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

LOADTESTS = Path(__file__).resolve().parents[2] / "loadtests"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(LOADTESTS))
    return importlib.import_module("bench_new_items")


@pytest.mark.parametrize("k", [10, 20])
def test_folded_in_items_reach_their_users_nearly_as_well_as_trained_in_ones(
    bench: ModuleType, k: int
) -> None:
    q = bench.quality(k)
    assert q.trained_hit_rate > 0.03, "the trained-in items must reach some lists to compare"
    assert q.ratio >= 0.7, q
    # and they do not reach the wrong users more often: the same precision, within noise
    assert q.folded_precision >= q.trained_precision - 0.1, q
