"""``/healthz`` (the process answers) and ``/readyz`` (it can serve useful lists).

Liveness touches nothing outside the process, so a Redis outage makes pods
unready (taken out of the load balancer) rather than dead (restarted in a loop).
Readiness needs Redis to answer and the popular fallback to be present and
readable: the retrain job writes it with every model, so without it there is no
model yet and every new user would get an empty list. When an API token is set,
a request without it learns ready or not and nothing else (no reason, no model
version): the probe needs no more, and the details are for operators.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from freshrec.errors import TransientError
from schemas.recs import decode, popular_key
from serving.auth import has_token
from serving.context import API, ApiContext
from serving.store import CorruptList

_OK = orjson.dumps({"status": "ok"})


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type="application/json")


async def handle_readyz(request: web.Request) -> web.Response:
    api = request.app[API]
    ready, reason, version = await _readiness(api)
    body: dict[str, object] = {"ready": ready}
    if has_token(request, api.settings.api_token):
        body.update(reason=reason, model_version=version)
    return web.Response(
        status=200 if ready else 503, body=orjson.dumps(body), content_type="application/json"
    )


async def _readiness(api: ApiContext) -> tuple[bool, str, str | None]:
    """Whether the API can serve useful lists, why (not), and the popular list's model version."""
    key = popular_key(api.settings.key_prefix)
    try:
        data = await api.store.popular(fresh=True)
    except TransientError as exc:
        return False, str(exc), None
    except CorruptList:
        return False, f"{key} is not a hash", None
    if data is None:
        return False, f"no popular list at {key}: no model has been published yet", None
    try:
        popular = decode(data)
    except ValueError as exc:
        return False, f"the popular list at {key} is unreadable: {exc}", None
    version = popular.model_version
    return True, f"popular list of model {version} present", version
