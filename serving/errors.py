"""Every error the API returns is JSON with a status, a code and a message; nothing else leaks.

Handlers raise :class:`ApiError` for bad input (or let a
:class:`~freshrec.errors.TransientError` from the Redis adapter escape); the
middleware here turns those, aiohttp's own 404/405, and any bug into one body
shape, ``{"error": {"status": ..., "code": ..., "message": ...}}``, so a
client parses failures the same way everywhere. An unexpected exception is
logged with its traceback on the server and answered with a bare 500: stack
traces and library messages never reach the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from freshrec.errors import TransientError

log = logging.getLogger(__name__)

#: Short machine-readable codes for aiohttp's own HTTP errors.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
}


class ApiError(Exception):
    """A request the API refuses: ``status`` and a ``message`` the client can act on."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The JSON error body every failing route answers with."""
    body = orjson.dumps({"error": {"status": status, "code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def error_middleware(retry_after_s: int) -> Middleware:
    """Middleware that renders every failure as JSON; ``Retry-After`` goes on each 503.

    ``retry_after_s`` is how long a client should wait before asking again
    when Redis cannot be reached.
    """
    retry_after = {"Retry-After": str(retry_after_s)}

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except TransientError as exc:
            return error_response(503, "unavailable", str(exc), retry_after)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            code = _HTTP_CODES.get(exc.status, "http_error")
            return error_response(exc.status, code, _describe(request, exc), headers)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(500, "internal", "internal error; the server log has details")

    return errors


def _describe(request: web.Request, exc: web.HTTPException) -> str:
    """A message for aiohttp's own errors that names what the client asked for."""
    if exc.status == 404:
        return f"no route for {request.path!r}; see /openapi.json"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method} not allowed on {request.path!r}; allowed: {allowed}"
    return exc.reason
