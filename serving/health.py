"""``/healthz`` (the process answers) and ``/readyz`` (it can serve: Redis answers).

Liveness touches nothing outside the process, so a Redis outage makes pods
unready (taken out of the load balancer) rather than dead (restarted in a loop).
Readiness is Redis answering, nothing more: with Redis the API serves every
request, a user without a list gets the popular fallback (empty before any
model exists), and holding a pod out of the load balancer until a model is
published would turn that into connection errors. The model's state is
reported beside it (``model``: ``present``, ``none`` or ``unreadable``, and the
popular list's ``model_version``), for operators and the demo to watch.
"""

from __future__ import annotations

from typing import Literal

import orjson
from aiohttp import web

from freshrec.errors import TransientError
from schemas.recs import decode, popular_key
from serving.context import API
from serving.store import CorruptList

_OK = orjson.dumps({"status": "ok"})

ModelState = Literal["present", "none", "unreadable"]


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type="application/json")


async def handle_readyz(request: web.Request) -> web.Response:
    api = request.app[API]
    key = popular_key(api.settings.key_prefix)
    try:
        data = await api.store.popular(fresh=True)
    except TransientError as exc:
        return _readiness(False, str(exc), None, None)
    except CorruptList:
        return _readiness(True, f"Redis answers; {key} is not a hash", "unreadable")
    if data is None:
        return _readiness(
            True,
            f"Redis answers; no popular list at {key}: no model has been published yet",
            "none",
        )
    try:
        version = decode(data).model_version
    except ValueError as exc:
        return _readiness(
            True, f"Redis answers; the popular list at {key} is unreadable: {exc}", "unreadable"
        )
    if version is None:
        return _readiness(True, "Redis answers; no model has been published yet", "none")
    return _readiness(True, f"Redis answers; model {version} is serving", "present", version)


def _readiness(
    ready: bool, reason: str, model: ModelState | None, model_version: str | None = None
) -> web.Response:
    body = {"ready": ready, "reason": reason, "model": model, "model_version": model_version}
    return web.Response(
        status=200 if ready else 503, body=orjson.dumps(body), content_type="application/json"
    )
