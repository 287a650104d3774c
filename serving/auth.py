"""Optional bearer-token check (``FRESHREC_API_TOKEN``) on every route but the probes.

``/healthz`` and ``/readyz`` stay open: an orchestrator's probes carry no
token, and they reveal nothing but "up" and "ready" (``/readyz`` gives its
reason and model version only to a request with the token, see
:func:`has_token`). The token is compared
with :func:`hmac.compare_digest`, whose time does not depend on where the
first differing byte is, so response timing does not leak the token.
The middleware is installed only when a token is set, so the check costs
nothing when it is off.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from serving.errors import ApiError

#: Paths that never need the token. ``/`` and ``/ops`` are pages for people: the
#: same static HTML for everyone, which asks for the token and sends it with its calls.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/ops"})

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="freshrec"'}


def has_token(request: web.Request, token: str) -> bool:
    """Whether ``request`` carries ``Authorization: Bearer <token>``; True when no token is set."""
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(errors="surrogatepass"), token.encode()
    )


def bearer_middleware(token: str) -> Middleware:
    """Middleware that answers 401 unless ``Authorization: Bearer <token>`` matches."""

    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS and not has_token(request, token):
            raise ApiError(
                401,
                "unauthorized",
                "this route needs the header 'Authorization: Bearer <token>' with the API token",
                _CHALLENGE,
            )
        return await handler(request)

    return bearer
