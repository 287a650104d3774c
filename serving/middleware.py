"""The one middleware every request passes: it times and counts it, and renders its failures.

Counting and error rendering are one middleware rather than two because
aiohttp wraps every middleware layer in a coroutine and a ``partial`` per
request; the hot route pays for each layer. Counting stays outermost in
effect: the status counted is the one the client gets, error pages included.
The bearer check, when a token is set, is an inner middleware
(:mod:`serving.auth`) whose 401 is rendered and counted here.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from serving.errors import failure_response
from serving.metrics import TALLY, route_label


def serving_middleware(retry_after_s: int) -> Middleware:
    """Count and time every request, and answer every failure with the JSON error body.

    ``retry_after_s`` is what a 503 tells clients to wait (``Retry-After``).
    """
    retry_after = {"Retry-After": str(retry_after_s)}
    clock = time.perf_counter
    tally = TALLY

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = clock()
        status = 500
        tally.started()
        try:
            try:
                response = await handler(request)
            except Exception as exc:
                response = failure_response(request, exc, retry_after)
            status = response.status
            return response
        except web.HTTPException as exc:  # a redirect, raised again by failure_response
            status = exc.status
            raise
        finally:
            tally.finished(route_label(request), status, clock() - started)

    return serve
