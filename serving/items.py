"""``GET /items``: the item catalog as this API process sees it, for people and the page.

The item table in Redis (:mod:`schemas.items`), as the store last read it
(:attr:`serving.store.RecsStore.catalog`, at most about a second old), over a
file catalog given at start: items by id, ``limit`` at a time after ``after``,
optionally only those passing a tag filter (the same rule as the lists').
Taken-down items are listed, marked ``available: false``: this is the catalog,
not a recommendation.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from serving.context import API
from serving.errors import ApiError
from serving.params import ITEM_ID, check_query, parse_k, parse_tag_filter

#: The query parameters of ``GET /items``.
ITEMS_QUERY = frozenset({"limit", "after", "tags", "exclude_tags"})
LIMIT_DEFAULT, LIMIT_MAX = 100, 1000


async def handle_items_list(request: web.Request) -> web.Response:
    api = request.app[API]
    query = request.query
    check_query(query, ITEMS_QUERY)
    if len(query.getall("limit", ())) > 1 or len(query.getall("after", ())) > 1:
        raise ApiError(400, "bad_query", "limit and after are given once at most")
    try:
        limit = parse_k(query.get("limit"), LIMIT_DEFAULT, LIMIT_MAX)
    except ApiError:
        raise ApiError(
            400, "bad_limit", f"limit must be a whole number from 1 to {LIMIT_MAX}"
        ) from None
    after = query.get("after")
    if after is not None and not ITEM_ID.accepts(after):
        raise ApiError(400, "bad_item", f"after is outside the contract: {ITEM_ID.bounds()}")
    rule = parse_tag_filter(query)
    catalog = await api.store.current_catalog()
    items = []
    for item in sorted(i for i in catalog.entries if after is None or i > after):
        entry = catalog.entries[item]
        if rule and not rule.passes(entry.tags):
            continue
        items.append(
            {
                "item": item,
                "title": entry.title,
                "tags": list(entry.tags),
                "available": entry.available,
            }
        )
        if len(items) == limit:
            break
    more = len(items) == limit
    body = {"items": items, "next": items[-1]["item"] if more else None}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
