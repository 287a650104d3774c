"""A batch's observations in one call give the histogram one call per value gives."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.metrics import BulkHistogram

BUCKETS = (0.01, 0.1, 1.0)


def exposition(histogram: type[Histogram], values: list[float], bulk: bool) -> bytes:
    registry = CollectorRegistry()
    h = histogram("h_seconds", "test", buckets=BUCKETS, registry=registry)
    if bulk:
        assert isinstance(h, BulkHistogram)
        h.observe_many(np.asarray(values))
    else:
        for value in values:
            h.observe(value)
    text: bytes = generate_latest(registry)
    # _created is the construction time of each histogram
    return b"\n".join(line for line in text.splitlines() if b"_created" not in line)


def test_observe_many_equals_one_observe_per_value_bounds_and_overflow_included() -> None:
    # on a bound (counted in it), between bounds, zero, above the last finite bound
    values = [0.0, 0.01, 0.010001, 0.05, 0.1, 0.5, 1.0, 3.0, 250.0, 0.01]
    assert exposition(BulkHistogram, values, True) == exposition(Histogram, values, False)


def test_observe_many_of_nothing_changes_nothing() -> None:
    assert exposition(BulkHistogram, [], True) == exposition(Histogram, [], False)


def test_nan_is_counted_in_no_bucket_as_observe_does() -> None:
    registry = CollectorRegistry()
    h = BulkHistogram("n_seconds", "test", buckets=BUCKETS, registry=registry)
    h.observe_many([math.nan, 0.5])
    assert registry.get_sample_value("n_seconds_bucket", {"le": "+Inf"}) == 1.0
    assert registry.get_sample_value("n_seconds_count") == 1.0
