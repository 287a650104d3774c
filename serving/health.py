"""``/healthz`` (the process answers) and ``/readyz`` (it can serve useful lists).

Liveness touches nothing outside the process, so a Redis outage makes pods
unready (taken out of the load balancer) rather than dead (restarted in a loop).
Readiness needs Redis to answer and the popular fallback to be present and
readable: the retrain job writes it with every model, so without it there is no
model yet and every new user would get an empty list.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from freshrec.errors import TransientError
from schemas.recs import decode, popular_key
from serving.context import API
from serving.store import CorruptList

_OK = orjson.dumps({"status": "ok"})


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type="application/json")


async def handle_readyz(request: web.Request) -> web.Response:
    api = request.app[API]
    key = popular_key(api.settings.key_prefix)
    try:
        data = await api.store.popular(fresh=True)
    except TransientError as exc:
        return _readiness(False, str(exc))
    except CorruptList:
        return _readiness(False, f"{key} is not a hash")
    if data is None:
        return _readiness(False, f"no popular list at {key}: no model has been published yet")
    try:
        popular = decode(data)
    except ValueError as exc:
        return _readiness(False, f"the popular list at {key} is unreadable: {exc}")
    version = popular.model_version
    return _readiness(True, f"popular list of model {version} present", version)


def _readiness(ready: bool, reason: str, model_version: str | None = None) -> web.Response:
    body = {"ready": ready, "reason": reason, "model_version": model_version}
    return web.Response(
        status=200 if ready else 503, body=orjson.dumps(body), content_type="application/json"
    )
