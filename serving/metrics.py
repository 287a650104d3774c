"""Prometheus metrics of the API, correct with one worker process or many.

With ``--workers N`` every process counts its own requests, and a scrape of
``/metrics`` lands on any one of them, so a per-process registry would show a
random fraction of the traffic. ``serving.server`` therefore points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before it spawns the workers;
prometheus_client then keeps every process's values in files there, and
:func:`render` merges them all on each scrape. Without that variable (one
process, or tests) the normal in-process registry is used.

prometheus_client reads the variable when it is imported, which is why the
workers are spawned, not forked: each imports this module afresh after the
variable is set.
"""

from __future__ import annotations

import asyncio
import os
from bisect import bisect_left

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Latency buckets in seconds: a list answered from Redis takes about a
#: millisecond, so the default buckets (5 ms and up) would hide the interesting part.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

REQUESTS = Counter(
    "freshrec_api_requests_total",
    "HTTP requests answered, by route template and status code.",
    ["route", "status"],
)
LATENCY = Histogram(
    "freshrec_api_request_duration_seconds",
    "Time from routing a request to its response, by route template and status code.",
    ["route", "status"],
    buckets=LATENCY_BUCKETS,
)
IN_PROGRESS = Gauge(
    "freshrec_api_requests_in_progress",
    "Requests being handled now, over all worker processes (saturation).",
    multiprocess_mode="livesum",
)
REDIS_ERRORS = Counter(
    "freshrec_api_redis_errors_total",
    "Failed Redis reads, by kind: unavailable (connection or timeout after retries), "
    "deadline (a read's deadline passed), corrupt (a list that does not parse "
    "or is not a hash), error (any other Redis error).",
    ["kind"],
)
SERVED = Counter(
    "freshrec_api_lists_served_total",
    "Lists answered by GET /recs, by source: personal or popular (the fallback).",
    ["source"],
)
EVENTS = Counter(
    "freshrec_api_events_total",
    "Events received by POST /events, by outcome: accepted (acknowledged by the broker), "
    "rejected (invalid, with the reason in the answer), failed (not acknowledged in time).",
    ["outcome"],
)

UNMATCHED = "unmatched"


class Tally:
    """This process's request metrics, written to the collectors once per event-loop turn.

    In multiprocess mode every ``inc``/``observe`` of a prometheus_client value
    takes a lock, calls ``getpid()`` and writes an mmap'd file; the six updates
    of one request cost about as much CPU as its JSON. Here a request only
    adds to plain dicts, and the first one of a loop turn schedules
    :meth:`flush` for the end of that turn (as :mod:`serving.coalesce` does for
    Redis reads). Under load the requests of one Redis batch finish in the same
    turn, so a flush writes each series once for all of them; under light load
    a flush follows every request. Either way the files are current at the end
    of every turn, before the process reads another request, so a scrape on any
    worker sees what the others have answered; the scraping worker flushes its
    own tally first (:func:`render`).
    """

    def __init__(self) -> None:
        self._in_progress = 0
        self._served: dict[str, int] = {}
        #: (route, status) -> [count, sum of seconds, count per latency bucket]
        self._requests: dict[tuple[str, int], tuple[list[float], list[int]]] = {}
        #: The counter and histogram child of each (route, status) seen: ``labels()``
        #: takes a lock and builds a key on every call. Bounded by the few routes
        #: times the few statuses the API answers with.
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._bounds = [*LATENCY_BUCKETS, float("inf")]
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def started(self) -> None:
        self._in_progress += 1
        self._schedule()

    def finished(self, route: str, status: int, seconds: float) -> None:
        self._in_progress -= 1
        key = (route, status)
        entry = self._requests.get(key)
        if entry is None:
            entry = self._requests[key] = ([0.0, 0.0], [0] * len(self._bounds))
        totals, buckets = entry
        totals[0] += 1
        totals[1] += seconds
        buckets[bisect_left(self._bounds, seconds)] += 1
        self._schedule()

    def served(self, source: str) -> None:
        self._served[source] = self._served.get(source, 0) + 1
        self._schedule()

    def _schedule(self) -> None:
        # Per loop, not a flag: a loop closed before its flush ran must not stop the next one.
        loop = asyncio.get_running_loop()
        if self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what this process counted since the last flush into the collectors."""
        self._scheduled_on = None
        if self._in_progress:
            IN_PROGRESS.inc(self._in_progress)
            self._in_progress = 0
        for source, count in self._served.items():
            SERVED.labels(source).inc(count)
        self._served.clear()
        for key, (totals, buckets) in self._requests.items():
            counter, histogram = self._series(key)
            counter.inc(totals[0])
            # Histogram has no public "observe n values at once"; these are the
            # values observe() itself adds to (a test pins the exposition).
            histogram._sum.inc(totals[1])
            for bucket, count in zip(histogram._buckets, buckets, strict=True):
                if count:
                    bucket.inc(count)
        self._requests.clear()

    def _series(self, key: tuple[str, int]) -> tuple[Counter, Histogram]:
        children = self._children.get(key)
        if children is None:
            code = str(key[1])
            children = self._children[key] = (
                REQUESTS.labels(key[0], code),
                LATENCY.labels(key[0], code),
            )
        return children


TALLY = Tally()


def route_label(request: web.Request) -> str:
    """The route template (``/recs/{user}``), never the raw path, so user ids add no series."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def render() -> tuple[bytes, str]:
    """The exposition text and its content type, merged across worker processes if several."""
    TALLY.flush()
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def handle_metrics(request: web.Request) -> web.Response:
    body, content_type = render()
    return web.Response(body=body, headers={"Content-Type": content_type})
