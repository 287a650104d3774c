"""``GET /``: a page for people, to watch lists change as events arrive.

One HTML file with its script and style inline (``serving/page/index.html``,
package data): no build step, nothing fetched from anywhere but this API. It
reads ``GET /recs/{user}?recent=10&fields=title,tags`` (the list, and the user's own
newest items shown beside it) every ``FRESHREC_API_PAGE_POLL_S``
seconds and sends a ``watch`` through ``POST /events`` when an item is clicked.
The page itself is open (it is the same for everyone and holds no data); when
a token is set, the page asks for it and sends it with each call it makes.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

from serving.context import API

PAGE_FILE = "page/index.html"
#: Placeholders in the page, filled from the settings when it is served.
POLL_MS = "__FRESHREC_POLL_MS__"
NEEDS_TOKEN = "__FRESHREC_NEEDS_TOKEN__"


@cache
def _page(poll_ms: int, needs_token: bool) -> bytes:
    html = resources.files(__package__).joinpath(PAGE_FILE).read_text(encoding="utf-8")
    html = html.replace(POLL_MS, str(poll_ms)).replace(NEEDS_TOKEN, str(needs_token).lower())
    return html.encode()


async def handle_page(request: web.Request) -> web.Response:
    settings = request.app[API].settings
    body = _page(round(settings.api_page_poll_s * 1000), bool(settings.api_token))
    return web.Response(
        body=body,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            # the page runs its own inline script and talks to this origin only
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        },
    )
