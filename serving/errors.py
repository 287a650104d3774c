"""Every error the API returns is JSON with a status, a code and a message; nothing else leaks.

Handlers raise :class:`ApiError` for bad input (or let a
:class:`~freshrec.errors.TransientError` from the Redis adapter escape);
:func:`failure_response` (called by the middleware in :mod:`serving.middleware`)
turns those, aiohttp's own 404/405, and any bug into one body
shape, ``{"error": {"status": ..., "code": ..., "message": ...}}``, so a
client parses failures the same way everywhere. An unexpected exception is
logged with its traceback on the server and answered with a bare 500: stack
traces and library messages never reach the client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

from freshrec.errors import TransientError
from freshrec.settings import Settings

log = logging.getLogger(__name__)

#: Short machine-readable codes for aiohttp's own HTTP errors.
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def retry_after_s(settings: Settings) -> int:
    """What a 503 tells clients to wait: our own longest backoff, in whole seconds (at least 1)."""
    return max(1, math.ceil(settings.retry_backoff_cap_s))


def retry_after_header(settings: Settings) -> dict[str, str]:
    return {"Retry-After": str(retry_after_s(settings))}


class ApiError(Exception):
    """A request the API refuses: ``status`` and a ``message`` the client can act on.

    ``extra`` goes into the body beside ``error`` (``POST /events`` puts each
    event's outcome there).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> web.Response:
    """The JSON error body every failing route answers with."""
    doc: dict[str, Any] = {"error": {"status": status, "code": code, "message": message}}
    if extra:
        doc.update(extra)
    return web.Response(
        status=status, body=orjson.dumps(doc), content_type="application/json", headers=headers
    )


def failure_response(
    request: web.Request, exc: Exception, retry_after: Mapping[str, str]
) -> web.Response:
    """The JSON response for a failure raised while handling ``request``.

    ``retry_after`` holds the ``Retry-After`` header that goes on each 503 (how
    long a client should wait when Redis cannot be reached). aiohttp's own
    non-error exceptions (redirects, ``status < 400``) are raised again.
    """
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.extra)
    if isinstance(exc, TransientError):
        return error_response(503, "unavailable", str(exc), retry_after)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, _describe(request, exc), headers)
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal", "internal error; the server log has details")


def _describe(request: web.Request, exc: web.HTTPException) -> str:
    """A message for aiohttp's own errors that names what the client asked for."""
    if exc.status == 404:
        return f"no route for {request.path!r}; see /openapi.json"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"method {request.method} not allowed on {request.path!r}; allowed: {allowed}"
    return exc.reason
