"""``/healthz`` (the process answers) and ``/readyz`` (it can serve: Redis answers).

Liveness touches nothing outside the process, so a Redis outage makes pods
unready (taken out of the load balancer) rather than dead (restarted in a loop).
Readiness is Redis answering, nothing more: with Redis the API serves every
request, a user without a list gets the popular fallback (empty before any
model exists), and holding a pod out of the load balancer until a model is
published would turn that into connection errors. The model's state is
reported beside it (``model``: ``present``, ``none`` or ``unreadable``, and the
popular list's ``model_version``), for operators and the demo to watch. When an
API token is set, a request without it learns ready or not and nothing else:
the probe needs no more, and the details are for operators.
"""

from __future__ import annotations

from typing import Literal

import orjson
from aiohttp import web

from freshrec.errors import TransientError
from schemas.recs import decode, popular_key
from serving.auth import has_token
from serving.context import API, ApiContext
from serving.store import CorruptList

_OK = orjson.dumps({"status": "ok"})

ModelState = Literal["present", "none", "unreadable"]


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type="application/json")


async def handle_readyz(request: web.Request) -> web.Response:
    api = request.app[API]
    ready, reason, model, version = await _readiness(api)
    body: dict[str, object] = {"ready": ready}
    if has_token(request, api.settings.api_token):
        body.update(reason=reason, model=model, model_version=version)
    return web.Response(
        status=200 if ready else 503, body=orjson.dumps(body), content_type="application/json"
    )


async def _readiness(api: ApiContext) -> tuple[bool, str, ModelState | None, str | None]:
    """Whether Redis answers, why (not), the model's state and the popular list's version."""
    key = popular_key(api.settings.key_prefix)
    try:
        data = await api.store.popular(fresh=True)
    except TransientError as exc:
        return False, str(exc), None, None
    except CorruptList:
        return True, f"Redis answers; {key} is not a hash", "unreadable", None
    if data is None:
        return (
            True,
            f"Redis answers; no popular list at {key}: no model has been published yet",
            "none",
            None,
        )
    try:
        version = decode(data).model_version
    except ValueError as exc:
        reason = f"Redis answers; the popular list at {key} is unreadable: {exc}"
        return True, reason, "unreadable", None
    if version is None:
        return True, "Redis answers; no model has been published yet", "none", None
    return True, f"Redis answers; model {version} is serving", "present", version
