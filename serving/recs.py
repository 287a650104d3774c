"""``GET /recs/{user}``: the user's stored list cut to ``k``, or the popular fallback.

The stored list (``schemas.recs``) is longer than the largest ``k``, so
excluded items are replaced by the next ones rather than just removed. Only
the first ``k + len(exclude)`` stored items are parsed (the contract's
:func:`schemas.recs.parse_compact`, or :func:`schemas.recs.parse_head` for a
list stored as JSON) and the first ``k`` that survive the exclusions are
served, so a request costs one Redis round trip and a few tens of
microseconds of work. Both formats give the same response; a compact list's
item ids come from its model's item table, which the store reads once per
version (:meth:`serving.store.RecsStore.item_names`).

Scores of both sources are on one scale, 0 to about 1 (a popular list's
counts are divided by its first item's, :func:`_popularity_as_share`).

``source`` is what the writer stored, never assumed: a user's list is
``popular`` when no model ranked it (no model yet, or none of the user's items
known to the model), and only a list the model ranked says ``personal``.

A list that does not parse (or a key of the wrong type) is counted, logged
and skipped in favour of the popular fallback: one user's bad record never
turns into an error page. Without any list at all the answer is an empty
popular list, still a 200.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from schemas.recs import Source, envelope, parse_compact, parse_head, variant_of
from serving.catalog import Catalog
from serving.context import API
from serving.metrics import REDIS_ERRORS, TALLY
from serving.params import check_query, parse_exclude, parse_fields, parse_k, parse_user
from serving.store import CorruptList, RecsStore

log = logging.getLogger(__name__)


async def handle_recs(request: web.Request) -> web.Response:
    api = request.app[API]
    user = parse_user(request.match_info["user"])
    settings = api.settings
    raw_query = request.rel_url.raw_query_string
    only_k = _ONLY_K.fullmatch(raw_query) if raw_query else None
    if only_k is not None:  # the common request: nothing to decode, nothing else to check
        k = parse_k(only_k.group(1), settings.api_default_k, settings.api_max_k)
        exclude = _NOTHING
    else:
        query = request.query
        if query:
            check_query(query)
        k = parse_k(query.get("k"), settings.api_default_k, settings.api_max_k)
        exclude = parse_exclude(query.getall("exclude", ()))
        fields = parse_fields(query.getall("fields", ()))
        if fields:
            body = with_fields(await answer(api.store, user, k, exclude), fields, api.catalog)
            return web.Response(body=body, content_type="application/json")
    body = await answer(api.store, user, k, exclude)
    return web.Response(body=body, content_type="application/json")


def with_fields(body: bytes, fields: frozenset[str], catalog: Catalog) -> bytes:
    """The answer with each item's catalog ``fields`` (its id as title when the catalog does
    not know it), and ``because_title`` beside ``because`` when titles are asked for.

    Only requests that ask pay for it: the answer is parsed again and decorated.
    """
    doc = orjson.loads(body)
    for item in doc["items"]:
        if "title" in fields:
            item["title"] = catalog.title(item["item"])
            if "because" in item:
                item["because_title"] = catalog.title(item["because"])
        if "tags" in fields:
            item["tags"] = list(catalog.tags(item["item"]))
    return orjson.dumps(doc)


#: A raw query string that is exactly ``k=<digits>``: parsing it as a whole
#: (:attr:`aiohttp.web.Request.query`) gives that one parameter, and a raw
#: string cannot hide a ``&`` or ``=`` in percent escapes as a decoded one can.
_ONLY_K = re.compile(r"k=([0-9]{1,9})")
_NOTHING: frozenset[str] = frozenset()


async def answer(store: RecsStore, user: str, k: int, exclude: frozenset[str]) -> bytes:
    """The response body: personal list when there is a readable one, else the fallback."""
    try:
        data = await store.user_list(user)
        if data is not None:
            body, source = render(user, data, k, exclude, names=await store.item_names(data))
            TALLY.served(source)
            return body
    except CorruptList as exc:
        _skip_corrupt(f"list of user {user!r}", exc)
    TALLY.served("popular")
    try:
        popular = await store.popular()
        if popular is not None:
            names = await store.item_names(popular)
            return render(user, popular, k, exclude, "popular", names)[0]
    except CorruptList as exc:
        _skip_corrupt("popular list", exc)
    return orjson.dumps(envelope(user, "popular", None, None, None, []))


def render(
    user: str,
    data: bytes,
    k: int,
    exclude: frozenset[str],
    source: Source | None = None,
    names: Sequence[str] | None = None,
) -> tuple[bytes, Source]:
    """The JSON body for one stored ``data`` field and its source; raises
    :class:`CorruptList` on garbage.

    ``names`` is the item table of a compact list (None: the list is JSON).
    ``source`` is the stored one unless given (the popular key's list is
    ``popular`` whatever it says). Only the first ``k + len(exclude)`` stored
    items can be served (each excluded id removes at most one), so only those
    are parsed.
    """
    wanted = k + len(exclude)
    if names is not None:  # the codec built the entries, typed and shaped as served
        try:
            doc = parse_compact(data, names, wanted)
        except ValueError as exc:
            raise CorruptList(str(exc)) from exc
        entries = doc["items"]
        top = entries[0]["score"] if entries else 0.0
        if exclude:
            entries = doc["items"] = [e for e in entries if e["item"] not in exclude]
        del entries[k:]
        doc["user"] = user
        if source is not None:
            doc["source"] = source
        if doc["source"] == "popular":
            _popularity_as_share(entries, top)
        return orjson.dumps(doc), doc["source"]
    try:
        doc = parse_head(data, wanted)
        picked: list[dict[str, Any]] = []
        top = doc["items"][0]["score"] if doc["items"] else 0.0
        for entry in doc["items"]:
            if len(picked) == k:
                break
            item = entry["item"]
            if item in exclude:
                continue
            score = entry["score"]
            if type(item) is not str or type(score) not in (float, int):
                raise TypeError(f"bad entry {entry!r}")
            out = {"item": item, "score": score}
            because = entry.get("because")
            if because is not None:
                if type(because) is not str:
                    raise TypeError(f"bad explanation {because!r}")
                out["because"] = because
            picked.append(out)
        version, updated_at, written_at = doc["model_version"], doc["updated_at"], doc["written_at"]
        if type(updated_at) is not int or type(written_at) is not int:
            raise TypeError("timestamps are not integers")
        if version is not None and type(version) is not str:
            raise TypeError("model_version is not a string")
        if source is None:
            source = _SOURCES[doc["source"]]
        if source == "popular":
            _popularity_as_share(picked, float(top))
        variant = variant_of(doc)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError too
        raise CorruptList(str(exc)) from exc
    body = envelope(user, source, version, updated_at, written_at, picked, variant)
    return orjson.dumps(body), source


def _popularity_as_share(entries: list[dict[str, Any]], top: float) -> None:
    """Put a popular list's scores on the personal lists' scale: 0 to 1.

    A popular list stores counts of users (566.0 beside personal scores of
    0.x, issue 26), so a client mixing both sources could not compare them. A
    personal score is the model's predicted preference, whose target is 1 for
    an item the user took and 0 otherwise; a popular item's score becomes its
    count over the most popular item's (the list's first), so the most popular
    item scores 1 and the scale reads the same way: 1 as sure as it gets.
    """
    if top <= 0:
        return
    for entry in entries:
        entry["score"] = round(entry["score"] / top, 4)


#: The stored ``source`` values, each to itself (a lookup that refuses any other value).
_SOURCES: dict[str, Source] = {"personal": "personal", "popular": "popular"}


def _skip_corrupt(what: str, exc: CorruptList) -> None:
    REDIS_ERRORS.labels("corrupt").inc()
    log.warning("skipping the unreadable %s: %s", what, exc)
