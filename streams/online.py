"""Online metrics: does the list a user was shown predict what they watch and rate next?

For every watch and rate event, the batch step (:func:`streams.batch.step`)
notes an :class:`Exposure`: the top of the list the worker last wrote for the
user (:class:`schemas.state.ShownList`, kept in the user's state) and the
event's item's rank in it. :func:`tally` turns a batch's exposures into totals
per model version and arm, which the pipeline adds to the worker's Prometheus
counters (:meth:`OnlineMetrics.count`) and to Redis with the batch's lists
(:mod:`schemas.online`), where ``freshrec models online`` reads them.

Only exposures made under the pointer generation in force count: after the
pointer moved, the worker rewrote the user's list with another model without
touching the state, so the state's list is no longer what the user sees. The
user's next event is then not counted, and the list written with it is.

The bookkeeping costs a few list lookups per event and a slice of each written
list's ids (``loadtests/bench_stream.py``'s ``online_metrics_cost``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from schemas.online import OnlineCounts
from schemas.state import ShownList
from streams.metrics import WorkerMetrics

#: The shorter cut-off of a hit, whatever ``FRESHREC_ONLINE_TOP_K`` is.
TOP = 10


@dataclass(frozen=True, slots=True)
class Exposure:
    """One watch or rate event of a user who had been shown ``shown``."""

    user: str
    shown: ShownList
    rank: int | None
    """The event's item's 1-based place in ``shown``; None when not in it."""
    rating: float | None
    """The rating of a rate event; None for a watch."""


#: Online counts per ``(model version, arm)``.
Totals = dict[tuple[str, str], OnlineCounts]


def tally(exposures: Iterable[Exposure], generation: int) -> Totals:
    """Totals per ``(version, arm)`` of the exposures made under ``generation``."""
    acc: dict[tuple[str, str], list[float]] = {}
    for e in exposures:
        shown = e.shown
        if shown.generation != generation:
            continue
        key = (shown.version, shown.arm)
        row = acc.get(key)
        if row is None:
            row = acc[key] = [0, 0, 0, 0.0, 0, 0.0, len(shown.items)]
        row[0] += 1
        rank = e.rank
        if rank is not None:
            row[1] += rank <= TOP
            row[2] += 1
            row[3] += 1.0 / rank
            if e.rating is not None:
                row[4] += 1
                row[5] += e.rating
        row[6] = max(row[6], len(shown.items))
    return {
        key: OnlineCounts(int(r[0]), int(r[1]), int(r[2]), r[3], int(r[4]), r[5], int(r[6]))
        for key, r in acc.items()
    }


def combine(a: Totals, b: Totals) -> Totals:
    """The sum of two batches' totals (a batch split in halves)."""
    out = dict(a)
    for key, c in b.items():
        d = out.get(key)
        out[key] = (
            c
            if d is None
            else OnlineCounts(
                d.events + c.events,
                d.hits10 + c.hits10,
                d.hitsk + c.hitsk,
                d.rr + c.rr,
                d.rated + c.rated,
                d.rating + c.rating,
                max(d.k, c.k),
            )
        )
    return out


class OnlineMetrics:
    """Adds a batch's online totals to the worker's Prometheus counters."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._m = metrics

    def count(self, totals: Totals) -> None:
        m = self._m
        for (version, arm), c in totals.items():
            m.online_events.labels(version, arm).inc(c.events)
            m.online_hits.labels(version, arm, "10").inc(c.hits10)
            m.online_hits.labels(version, arm, "k").inc(c.hitsk)
            m.online_reciprocal_rank.labels(version, arm).inc(c.rr)
            m.online_rated.labels(version, arm).inc(c.rated)
            m.online_rating.labels(version, arm).inc(c.rating)
