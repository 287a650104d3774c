"""``/healthz`` (the process answers) and ``/readyz`` (it can serve: Redis answers).

Liveness touches nothing outside the process, so a Redis outage makes pods
unready (taken out of the load balancer) rather than dead (restarted in a loop).
Readiness is Redis answering, nothing more: with Redis the API serves every
request, a user without a list gets the popular fallback (empty before any
model exists), and holding a pod out of the load balancer until a model is
published would turn that into connection errors. The model's state is
reported beside it (``model``: ``present``, ``none`` or ``unreadable``, and the
popular list's ``model_version``), for operators and the demo to watch, and so
is whether ``POST /events`` can take events (``events``: ``accepting``,
``unavailable`` when the broker does not answer, ``idle`` before the first). When an
API token is set, a request without it learns ready or not and nothing else:
the probe needs no more, and the details are for operators.
"""

from __future__ import annotations

import asyncio
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
EventsState = Literal["accepting", "unavailable", "idle"]

#: How long ``/readyz`` waits for the broker's metadata: under a probe's usual 1 s timeout.
BROKER_PROBE_S = 0.5


async def handle_healthz(request: web.Request) -> web.Response:
    return web.Response(body=_OK, content_type="application/json")


async def handle_readyz(request: web.Request) -> web.Response:
    api = request.app[API]
    ready, reason, model, version = await _readiness(api)
    body: dict[str, object] = {"ready": ready}
    if has_token(request, api.settings.api_token):
        events, events_reason = await _events_state(api)
        body.update(
            reason=reason,
            model=model,
            model_version=version,
            events=events,
            events_reason=events_reason,
        )
    return web.Response(
        status=200 if ready else 503, body=orjson.dumps(body), content_type="application/json"
    )


async def _events_state(api: ApiContext) -> tuple[EventsState, str]:
    """Whether ``POST /events`` can be accepted now, and why (not).

    The producer is made by the first ``POST /events`` (a read-only deployment
    never connects to the broker); before that the state is ``idle``. Once it
    exists, one metadata request says whether the broker answers (issue 26:
    an API whose broker was unreachable said nothing of it here).
    """
    producer = api.producer_or_none
    if producer is None:
        return "idle", "no POST /events yet; the API connects to the broker on the first"
    problem = await asyncio.to_thread(producer.broker_problem, BROKER_PROBE_S)
    if problem is not None:
        return "unavailable", f"POST /events answers 503: {problem}"
    return "accepting", f"the broker at {api.settings.bootstrap_servers} answers"


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
