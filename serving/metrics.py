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

import os
import time

from aiohttp import web
from aiohttp.typedefs import Handler
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

SERVED_PERSONAL = SERVED.labels("personal")
SERVED_POPULAR = SERVED.labels("popular")

UNMATCHED = "unmatched"

#: The request counter and histogram of each (route, status) seen: ``labels()``
#: takes a lock and builds a key on every call, too dear for every request.
#: Bounded by the few routes times the few statuses the API answers with.
_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}


def route_label(request: web.Request) -> str:
    """The route template (``/recs/{user}``), never the raw path, so user ids add no series."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request; outermost, so it sees the status the client gets."""
    started = time.perf_counter()
    status = 500
    IN_PROGRESS.inc()
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        IN_PROGRESS.dec()
        key = (route_label(request), status)
        children = _children.get(key)
        if children is None:
            code = str(status)
            children = _children[key] = (
                REQUESTS.labels(key[0], code),
                LATENCY.labels(key[0], code),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type, merged across worker processes if several."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


async def handle_metrics(request: web.Request) -> web.Response:
    body, content_type = render()
    return web.Response(body=body, headers={"Content-Type": content_type})
