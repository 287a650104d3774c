"""CORS: which web origins' pages may call the API from a browser (``FRESHREC_API_CORS_ORIGINS``).

Off by default: a browser then refuses a page of another origin the answers,
as it should for an API that serves people's lists. With origins set, the
middleware answers the browser's preflight (``OPTIONS`` with
``Access-Control-Request-Method``) itself, before the bearer check (a
preflight never carries the token), and marks every answer to an allowed
origin, error answers included, so that a page can read why a call failed.
It is the outermost middleware and is installed only when origins are set, so
it costs nothing when off.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

#: What a preflight may ask for: the API's methods and the headers its calls send.
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"
#: How long a browser may keep a preflight's answer, in seconds.
MAX_AGE_S = 600


def parse_origins(setting: str) -> frozenset[str]:
    """The origins of ``FRESHREC_API_CORS_ORIGINS`` (validated by the settings), ``*`` kept."""
    return frozenset(o.strip().rstrip("/") for o in setting.split(",") if o.strip())


def cors_middleware(origins: frozenset[str]) -> Middleware:
    """Middleware that lets pages of ``origins`` (or any, with ``*``) call the API."""
    anyone = "*" in origins

    def allowed(request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin is None or not (anyone or origin in origins):
            return None
        return origin

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = allowed(request)
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and origin is not None
        ):
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": str(MAX_AGE_S),
                    "Vary": "Origin",
                },
            )
        response = await handler(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
            response.headers.add("Vary", "Origin")
        return response

    return cors
