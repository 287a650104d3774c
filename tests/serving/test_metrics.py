"""The per-process tally (serving.metrics.Tally) writes what prometheus_client's own calls would."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Histogram

from serving.metrics import LATENCY, LATENCY_BUCKETS, REQUESTS, SERVED, TALLY

DURATIONS = [0.0001, 0.0005, 0.0007, 0.003, 0.003, 0.04, 0.6, 7.0, 99.0]


def samples(metric: Counter | Histogram, *labels: str) -> dict[str, float]:
    child = metric.labels(*labels) if labels else metric
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in child.collect()
        for s in family.samples
        if not s.name.endswith("_created") and s.labels.get("route", "t") == "t"
    }


async def test_a_flush_adds_up_to_one_observe_per_request() -> None:
    reference = Histogram(
        "ref_seconds",
        "",
        ["route", "status"],
        buckets=LATENCY_BUCKETS,
        registry=CollectorRegistry(),
    )
    requests_before = REQUESTS.labels("t", "200")._value.get()
    personal_before = SERVED.labels("personal")._value.get()
    for seconds in DURATIONS:
        TALLY.started()
        TALLY.finished("t", 200, seconds)
        TALLY.served("personal")
        reference.labels("t", "200").observe(seconds)
    await asyncio.sleep(0)  # the end of this loop turn: the scheduled flush runs

    ours = samples(LATENCY, "t", "200")
    theirs = samples(reference, "t", "200")
    assert ours == {name.replace("ref_seconds", LATENCY._name): v for name, v in theirs.items()}
    assert REQUESTS.labels("t", "200")._value.get() == requests_before + len(DURATIONS)
    assert SERVED.labels("personal")._value.get() == personal_before + len(DURATIONS)
