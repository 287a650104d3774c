"""``GET /similar/{item}`` and ``POST /recs``: lists made of the similar-item lists in Redis.

``GET /similar/{item}`` serves the item's stored neighbours under the model
version the workers serve (the popular list names it,
:meth:`serving.store.RecsStore.model_version`): one ``HGET`` of
``P similar:<version>``, read with the takedown set, then the filters of every
list endpoint (:func:`serving.recs.render`). An item without a list (the
model does not know it) that the catalog knows with tags gets the popular list
of its tags, marked ``source: "popular"``; any other unknown item is a 404
with a JSON reason.

``POST /recs`` is a list for a session without a user (an anonymous visitor,
a basket, a page's current item): the given items' similar lists, read in one
round trip, are summed (a candidate's score is the sum of its cosines to the
given items it neighbours, so items close to several of them come first; its
``because`` is the given item it is closest to); the given items themselves,
``exclude``, the items taken down and the tag filter leave candidates out.
The given items are taken as a set, so their order never changes the answer.
With none of them known to the model, the answer is the popular list without
them. No model math runs here: only the stored lists.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from schemas.recs import envelope, parse_compact
from serving.context import API
from serving.errors import ApiError
from serving.params import ITEM_ID, TagFilter
from serving.recs import Asked, finish, parse_asked, popular_doc, render
from serving.store import CorruptList, RecsStore

#: Most items one ``POST /recs`` may give (each is one field read).
MAX_SESSION_ITEMS = 50


def parse_item(raw: str, what: str = "item id") -> str:
    """An item id within the event contract's bounds, or a 400 saying which."""
    if not ITEM_ID.accepts(raw):
        raise ApiError(
            400, "bad_item", f"{what} {raw[:70]!r} is outside the contract: {ITEM_ID.bounds()}"
        )
    return raw


async def handle_similar(request: web.Request) -> web.Response:
    api = request.app[API]
    item = parse_item(request.match_info["item"])
    asked = parse_asked(request)
    store = api.store
    asked = Asked(asked.k, asked.exclude | {item}, asked.tags, asked.fields)
    version = await store.model_version()
    down: frozenset[str] = frozenset()
    if version is not None:
        data, down = await store.similar_list(version, item)
        await store.ensure_catalog()
        if data is not None:
            try:
                names = await store.item_names(data)
                doc, _ = render(None, data, asked, store.catalog, down, names=names)
            except CorruptList as exc:
                raise ApiError(503, "unreadable", f"the similar list of {item!r}: {exc}") from None
            return _answer(await finish(store, _as_similar(doc, item), asked, down))
    tags = store.catalog.tags(item)
    if not tags:
        raise ApiError(
            404,
            "unknown_item",
            f"item {item!r} has no similar items: the current model "
            f"({version or 'none yet'}) does not know it and the catalog gives it no tags",
        )
    by_tags = asked.tags if asked.tags.any_of else TagFilter(frozenset(tags), asked.tags.none_of)
    doc = await popular_doc(store, None, Asked(asked.k, asked.exclude, by_tags), down)
    return _answer(await finish(store, _as_similar(doc, item), asked, down))


def _as_similar(doc: dict[str, Any], item: str) -> dict[str, Any]:
    """A rendered list as ``GET /similar``'s answer: the item in place of a user."""
    out = {"item": item, **doc}
    del out["user"]
    if out["source"] != "popular":
        out["source"] = "similar"
    return out


async def handle_session(request: web.Request) -> web.Response:
    api = request.app[API]
    asked = parse_asked(request)
    given = _session_items(await request.read(), request.content_type)
    store = api.store
    asked = Asked(asked.k, asked.exclude | given, asked.tags, asked.fields)
    version = await store.model_version()
    down: frozenset[str] = frozenset()
    order = sorted(given)
    doc = None
    if version is not None:
        lists, down = await store.similar_lists(version, order)
        if asked.tags or asked.fields:
            await store.ensure_catalog()
        doc = await _combined(store, version, order, lists, asked, down)
    if doc is None:
        doc = {"given": order, **await popular_doc(store, None, asked, down)}
    return _answer(await finish(store, doc, asked, down))


def _session_items(body: bytes, content_type: str) -> frozenset[str]:
    if content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", 'send application/json: {"items": [...]}')
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_body", f"body is not valid JSON: {exc.msg}") from None
    items = doc.get("items") if isinstance(doc, dict) else None
    if isinstance(doc, dict) and set(doc) - {"items"}:
        extra = sorted(set(doc) - {"items"})[0]
        raise ApiError(400, "bad_body", f"{extra[:40]!r} is not a field of a session; send items")
    if not isinstance(items, list) or not items or len(items) > MAX_SESSION_ITEMS:
        raise ApiError(
            400,
            "bad_body",
            f'the body must be {{"items": [...]}} with 1 to {MAX_SESSION_ITEMS} item ids',
        )
    if any(type(i) is not str for i in items):
        raise ApiError(400, "bad_item", "every item id must be a string")
    return frozenset(parse_item(i, "given item id") for i in items)


async def _combined(
    store: RecsStore,
    version: str,
    given: list[str],
    lists: list[bytes | None],
    asked: Asked,
    down: frozenset[str],
) -> dict[str, Any] | None:
    """The session's answer from the given items' similar lists (module doc); None when
    none of them has a list."""
    scores: dict[str, float] = {}
    because: dict[str, tuple[float, str]] = {}
    found = False
    for source, data in zip(given, lists, strict=True):
        if data is None:
            continue
        try:
            entries = parse_compact(data, await store.item_names(data) or ())["items"]
        except (CorruptList, ValueError):
            continue  # one unreadable list leaves the others to answer
        found = True
        for entry in entries:
            item, score = entry["item"], float(entry["score"])
            scores[item] = scores.get(item, 0.0) + score
            if item not in because or score > because[item][0]:
                because[item] = (score, source)
    if not found:
        return None
    skip = asked.exclude | down
    tags, catalog = asked.tags, store.catalog
    none: frozenset[str] = frozenset()
    ranked = sorted(
        (
            (-score, item)
            for item, score in scores.items()
            if item not in skip and (not tags or tags.passes_set(catalog.tag_sets.get(item, none)))
        ),
    )[: asked.k]
    items = [
        {"item": item, "score": round(-neg, 4), "because": because[item][1]} for neg, item in ranked
    ]
    return {"given": given, **envelope(None, "session", version, None, None, items)}  # type: ignore[arg-type]


def _answer(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json")
