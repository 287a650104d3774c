"""``GET /ops`` (a page) and ``GET /ops.json`` (its data): the model versions, for ops.

What the page shows, read afresh at each call:

- the versions in ``FRESHREC_MODEL_STORE`` (the newest :data:`VERSIONS_SHOWN`),
  with their offline figures (the gate's metric, the candidate's and the
  baseline's score; for a version ``freshrec train`` made, its evaluation's),
  which one is current and which the canary, and the pointer's last move
  (what, who, when);
- the online figures of every version and arm the workers counted
  (:mod:`schemas.online`, :mod:`models.online`);
- during a canary release, both arms and the sequential test's state
  (:mod:`models.sequential`, at the API's own ``FRESHREC_CANARY_*`` settings);
- the dead letters by reason (:mod:`schemas.dead_letters`).

The store is read in a thread (fsspec is blocking); an API that cannot read it
(its pods do not mount it) still shows the rest, and says why the versions are
missing. ``/ops.json`` needs the token when one is set (the middleware); the
page, static HTML like ``/``, asks for it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from redis.exceptions import RedisError

from freshrec.errors import ModelStoreError, TransientError
from freshrec.model_store import ModelStore
from freshrec.redis_client import TRANSIENT_ERRORS
from freshrec.settings import Settings
from models.online import OnlineFigures
from models.sequential import look_at_canary
from schemas.dead_letters import dead_letters_key, decode_tally
from schemas.online import OnlineCounts, decode_counts, parse_key
from serving.context import API
from serving.errors import ApiError
from serving.store import RecsStore

#: What a read of Redis raises when it cannot be done (as :mod:`serving.store` reads).
_READ_ERRORS: tuple[type[Exception], ...] = (TimeoutError, RedisError, *TRANSIENT_ERRORS)

PAGE_FILE = "page/ops.html"
#: Versions listed, newest first: a store keeps ``FRESHREC_MODEL_KEEP`` and a few more.
VERSIONS_SHOWN = 20
#: The offline figure shown for a version without a gate decision (``freshrec train``'s).
OFFLINE_METRICS = ("ndcg@10", "ndcg@5", "map@10")


@cache
def _page() -> bytes:
    return resources.files(__package__).joinpath(PAGE_FILE).read_bytes()


async def handle_ops_page(request: web.Request) -> web.Response:
    return web.Response(
        body=_page(),
        content_type="text/html",
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'",
        },
    )


async def handle_ops_data(request: web.Request) -> web.Response:
    api = request.app[API]
    try:
        counts, tally = await _redis_figures(api.store)
    except TransientError as exc:
        raise ApiError(503, "unavailable", str(exc)) from exc
    body = await asyncio.to_thread(_store_figures, api.settings)
    figures = [
        {"version": v, "arm": arm} | OnlineFigures.of(c).as_dict()
        for (v, arm), c in sorted(counts.items())
    ]
    body |= {"online": figures, "dead_letters": tally, "canary": None}
    pointer = body.get("pointer") or {}
    if pointer.get("canary"):
        body["canary"] = _canary(api.settings, pointer, counts)
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def _redis_figures(
    store: RecsStore,
) -> tuple[dict[tuple[str, str], OnlineCounts], dict[str, int]]:
    """Every online count and the dead-letter tally, from Redis."""
    client, prefix = store.client, store.prefix
    try:
        async with asyncio.timeout(max(store.deadline_s, 2.0)):
            counts: dict[tuple[str, str], OnlineCounts] = {}
            async for raw in client.scan_iter(match=f"{prefix}online:*", count=1000):
                key = raw.decode() if isinstance(raw, bytes) else raw
                named = parse_key(prefix, key)
                if named is not None:
                    counts[named] = decode_counts(await client.hgetall(key))
            tally = decode_tally(await client.hgetall(dead_letters_key(prefix)))
    except _READ_ERRORS as exc:
        raise TransientError(f"Redis cannot be read: {type(exc).__name__}") from exc
    return counts, tally


def _store_figures(settings: Settings) -> dict[str, Any]:
    """The pointer and the newest versions with their offline figures (blocking)."""
    store = ModelStore(settings.model_store)
    try:
        pointer = store.pointer()
        ids = store.versions()[-VERSIONS_SHOWN:][::-1]
        metas = {v: store.meta(v) for v in ids}
    except (ModelStoreError, OSError) as exc:
        return {"pointer": None, "versions": [], "store_error": str(exc)}
    versions = []
    for version_id in ids:
        meta = metas[version_id]
        metrics = meta.get("metrics", {})
        gate = metrics.get("gate") or {}
        if not gate:  # `freshrec train` records its evaluation's figures instead
            named = next((m for m in OFFLINE_METRICS if m in metrics), None)
            gate = {"metric": named, "candidate": metrics.get(named) if named else None}
        versions.append(
            {
                "version": version_id,
                "created": _iso(meta.get("created_at", 0)),
                "current": version_id == pointer.version,
                "canary": version_id == pointer.canary,
                "metric": gate.get("metric"),
                "score": gate.get("candidate"),
                "baseline": gate.get("baseline"),
                "events": meta.get("snapshot", {}).get("events"),
            }
        )
    return {
        "pointer": {
            "version": pointer.version,
            "canary": pointer.canary,
            "fraction": pointer.fraction,
            "generation": pointer.generation,
            "move": pointer.move,
            "by": pointer.by,
            "at": _iso(pointer.at_ms),
        },
        "versions": versions,
        "store_error": None,
    }


def _canary(
    settings: Settings, pointer: dict[str, Any], counts: dict[tuple[str, str], OnlineCounts]
) -> dict[str, Any]:
    a = counts.get((pointer["version"], "current"), OnlineCounts())
    b = counts.get((pointer["canary"], "canary"), OnlineCounts())
    state = look_at_canary(a, b, settings)
    return {
        "current": {"version": pointer["version"]} | OnlineFigures.of(a).as_dict(),
        "candidate": {"version": pointer["canary"], "fraction": pointer["fraction"]}
        | OnlineFigures.of(b).as_dict(),
        "test": state.as_dict()
        | {"method": "mixture SPRT (always valid)", "alpha": settings.canary_alpha},
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
