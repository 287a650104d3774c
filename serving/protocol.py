"""The API's HTTP connection handling: JSON answers to malformed requests, and timeouts.

aiohttp answers a request it cannot parse (a request line or header past its
limits, too many headers, garbage) before any middleware runs, in plain text
that quotes the offending bytes back to the client. Its connection handler
also gives a client that drips header bytes as long as the keep-alive timer
allows, so a few slow clients can hold connections open for minutes. This
module replaces aiohttp's connection handler with one that:

* answers a parse failure with the API's JSON error body
  (:func:`serving.errors.error_response`), 431 for headers over the limits and
  400 for everything else, naming the limit but never echoing the request;
* closes a connection whose request headers are not complete within
  ``api_header_timeout_s`` of their first byte (or of the connection's
  opening), while the idle time between requests stays bounded by
  ``api_keepalive_timeout_s`` (aiohttp's own keep-alive timer). Bytes that
  arrive while a request is read or handled are its body, never the start of
  the next request's headers: a body sent after its headers (``Expect:
  100-continue``, as curl sends a body over 1 KB) once armed the header
  timeout, which closed the connection, unanswered, while ``POST /events``
  waited for a broker that was down (issue 28). A handler's wait is bounded by
  its own timeouts (``POST /events``: the publish timeout), whatever the
  header timeout.

:class:`GuardedRunner` is ``aiohttp.web.AppRunner`` with that handler; the
server (:mod:`serving.server`) and the tests serve the app through it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from freshrec.settings import Settings
from serving.errors import error_response

log = logging.getLogger(__name__)

#: aiohttp's parser limits, which :class:`GuardedRunner` passes explicitly so
#: that the messages below state them.
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 128

_HEADERS_TOO_LARGE = (
    f"request headers too large: at most {MAX_HEADERS} fields of {MAX_FIELD_BYTES} bytes each"
)


def describe_parse_error(exc: BaseException | None, in_request_line: bool) -> tuple[int, str, str]:
    """Status, code and message for a request aiohttp could not parse; nothing of the request.

    ``in_request_line``: the request's first line end came past the limit (or
    never), so a line over the limit is the request line (the URL), not a header.
    """
    if isinstance(exc, LineTooLong):
        if in_request_line:
            return (
                400,
                "request_line_too_long",
                f"request line longer than {MAX_LINE_BYTES} bytes; shorten the URL",
            )
        return 431, "headers_too_large", _HEADERS_TOO_LARGE
    if isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc):
        return 431, "headers_too_large", _HEADERS_TOO_LARGE
    return 400, "bad_request", "malformed HTTP request"


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with JSON parse errors and a header-read timeout."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s
        self._header_deadline: asyncio.TimerHandle | None = None
        #: Bytes of the request being read, and where its first line ends (None: not yet).
        self._head_bytes = 0
        self._first_line_end: int | None = None
        #: Whether the last request the parser finished (or refused) had a
        #: request line over the limit: what a LineTooLong is about.
        self._long_request_line = False
        #: Requests whose headers were parsed and whose answer is not written yet:
        #: bytes arriving meanwhile are their bodies (module doc).
        self._open_requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        completed = self._request_count
        reading_headers = self._payload_parser is None and not self._upgraded
        if reading_headers and self._first_line_end is None:
            at = data.find(b"\n")
            self._first_line_end = None if at < 0 else self._head_bytes + at
        self._head_bytes += len(data)
        super().data_received(data)
        if not reading_headers:
            return
        if self._request_count != completed:
            end = self._first_line_end
            self._long_request_line = end is None or end > MAX_LINE_BYTES
            self._head_bytes, self._first_line_end = 0, None
            self._open_requests += self._request_count - completed
            self._disarm_header_deadline()
        elif self._open_requests:
            self._head_bytes, self._first_line_end = 0, None  # a body, not a head
        elif self._header_deadline is None:
            self._arm_header_deadline()

    async def finish_response(self, request: BaseRequest, *args: Any, **kwargs: Any) -> Any:
        """aiohttp's, and then the request is answered: later bytes start the next one."""
        try:
            return await super().finish_response(request, *args, **kwargs)
        finally:
            self._open_requests = max(0, self._open_requests - 1)

    def _arm_header_deadline(self) -> None:
        if self._header_timeout_s > 0:
            self._header_deadline = self._loop.call_later(
                self._header_timeout_s, self._header_timeout
            )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_timeout(self) -> None:
        """The client took too long to send its request headers: drop the connection."""
        self._header_deadline = None
        log.info(
            "closing a connection whose request headers took over %.1fs", self._header_timeout_s
        )
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400 or not isinstance(exc, BadHttpMessage):
            return super().handle_error(request, status, exc, message)
        # A client error, logged without the request's bytes or a traceback.
        status, code, text = describe_parse_error(exc, self._long_request_line)
        log.debug("refused a malformed request: %s", code)
        response = error_response(status, code, text)
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making :class:`GuardedRequestHandler` connections."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout_s = header_timeout_s

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self, loop=self._loop, header_timeout_s=self._header_timeout_s, **self._kwargs
        )


class GuardedRunner(web.AppRunner):
    """``AppRunner`` whose connections are :class:`GuardedRequestHandler`\\ s (see module doc)."""

    def __init__(self, app: web.Application, settings: Settings, **kwargs: Any) -> None:
        super().__init__(
            app,
            keepalive_timeout=settings.api_keepalive_timeout_s,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            **kwargs,
        )
        self._header_timeout_s = settings.api_header_timeout_s

    async def _make_server(self) -> web.Server:
        # The app's own server (after its startup hooks), rebuilt as a
        # GuardedServer with the same handler, request factory and options.
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            header_timeout_s=self._header_timeout_s,
            **plain._kwargs,
        )
