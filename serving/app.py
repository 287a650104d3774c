"""The aiohttp application factory: routes, middlewares, and the Redis client's lifetime.

``create_app(settings)`` builds an application without touching the network;
its ``cleanup_ctx`` opens the Redis client when the app starts and closes it
(with its pool) when the app shuts down, after in-flight requests finished.
Tests run it in-process; :mod:`serving.server` runs it in worker processes.

``POST /events`` produces through a Kafka producer made on its first use and
closed by a second ``cleanup_ctx`` (:mod:`serving.events`); the page for people
is at ``/`` (:mod:`serving.page`). The item catalog, when configured, is read
here, before the app starts, so a bad file fails ``freshrec api`` at once.

Middlewares, outermost first: :mod:`serving.cors` when origins are set (browser
preflights, answered before the token is asked for), :mod:`serving.middleware` (counts and times
every request with the status the client gets, and turns every failure into a
JSON body), then the bearer check when a token is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from freshrec.settings import Settings
from serving import catalog
from serving.auth import bearer_middleware
from serving.context import API, ApiContext
from serving.cors import cors_middleware, parse_origins
from serving.errors import retry_after_s
from serving.events import handle_events, handle_items, producer_lifetime
from serving.health import handle_healthz, handle_readyz
from serving.items import handle_items_list
from serving.metrics import handle_metrics
from serving.middleware import serving_middleware
from serving.openapi import handle_openapi
from serving.ops import handle_ops_data, handle_ops_page
from serving.page import handle_page
from serving.recs import handle_recs
from serving.redis_client import make_redis, read_deadline_s
from serving.similar import handle_session, handle_similar
from serving.store import RecsStore


def create_app(settings: Settings) -> web.Application:
    """The API for these settings; nothing touches the network until the app starts."""
    middlewares: list[Middleware] = [serving_middleware(retry_after_s(settings))]
    if settings.api_cors_origins:
        middlewares.insert(0, cors_middleware(parse_origins(settings.api_cors_origins)))
    if settings.api_token:
        middlewares.append(bearer_middleware(settings.api_token))
    app = web.Application(middlewares=middlewares, client_max_size=settings.api_events_max_bytes)
    items = catalog.load(settings.api_catalog) if settings.api_catalog else catalog.Catalog()
    app[API] = ApiContext(settings=settings, catalog=items)
    app.cleanup_ctx.append(_redis_lifetime)
    app.cleanup_ctx.append(producer_lifetime)
    app.router.add_get("/recs/{user}", handle_recs)
    app.router.add_post("/recs", handle_session)
    app.router.add_get("/similar/{item}", handle_similar)
    app.router.add_post("/events", handle_events)
    app.router.add_post("/items", handle_items)
    app.router.add_get("/items", handle_items_list)
    app.router.add_get("/", handle_page)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/openapi.json", handle_openapi)
    app.router.add_get("/ops", handle_ops_page)
    app.router.add_get("/ops.json", handle_ops_data)
    return app


async def _redis_lifetime(app: web.Application) -> AsyncIterator[None]:
    api = app[API]
    client = make_redis(api.settings)
    api.store_or_none = RecsStore(client, api.settings, read_deadline_s(api.settings), api.catalog)
    try:
        yield
    finally:
        store, api.store_or_none = api.store_or_none, None
        await store.close()
        await client.aclose()
