"""``GET /recs/{user}``: the user's stored list cut to ``k``, or the popular fallback.

Every answer leaves out the items taken down (read in the same round trip as
the list, :meth:`serving.store.RecsStore.user_list`), and, with ``?tags=`` or
``&exclude_tags=``, the items the tag filter refuses; a filtered answer with
fewer than ``k`` items is filled from the popular list under the same filters
(:func:`fill`). :func:`render` and :class:`Asked` serve the other list
endpoints (``GET /similar``, ``POST /recs``) alike.

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

With ``?recent=n`` the answer also carries ``recent``: the user's ``n`` newest
items (:mod:`schemas.recent`), read from the list's hash in the same round
trip; empty for a user without a list.

A list that does not parse (or a key of the wrong type) is counted, logged
and skipped in favour of the popular fallback: one user's bad record never
turns into an error page. Without any list at all the answer is an empty
popular list, still a 200.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from schemas.recent import RECENT_LENGTH
from schemas.recent import decode as decode_recent
from schemas.recs import Source, envelope, parse_compact, parse_head, variant_of
from serving.catalog import Catalog
from serving.context import API
from serving.errors import ApiError
from serving.metrics import REDIS_ERRORS, TALLY
from serving.params import (
    QUERY_PARAMETERS,
    TagFilter,
    check_query,
    parse_exclude,
    parse_fields,
    parse_k,
    parse_tag_filter,
    parse_user,
)
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
        asked = Asked(k)
        recent = 0
    else:
        asked = parse_asked(request, RECS_QUERY)
        recent = parse_recent(request.query.get("recent"))
    body = await answer(api.store, user, asked, recent)
    return web.Response(body=body, content_type="application/json")


@dataclass(frozen=True, slots=True)
class Asked:
    """What a request asks of a list beyond its user: ``k``, the ids to leave out, the tag
    filter and the catalog fields to add. The same on every list endpoint."""

    k: int
    exclude: frozenset[str] = frozenset()
    tags: TagFilter = field(default_factory=TagFilter)
    fields: frozenset[str] = frozenset()


def parse_asked(request: web.Request, known: frozenset[str] = QUERY_PARAMETERS) -> Asked:
    """The query's ``k``, ``exclude``, ``tags``, ``exclude_tags`` and ``fields`` (400: bad,
    or a parameter not in ``known``)."""
    settings = request.app[API].settings
    query = request.query
    if query:
        check_query(query, known)
    return Asked(
        parse_k(query.get("k"), settings.api_default_k, settings.api_max_k),
        parse_exclude(query.getall("exclude", ())),
        parse_tag_filter(query),
        parse_fields(query.getall("fields", ())),
    )


def with_fields(doc: dict[str, Any], fields: frozenset[str], catalog: Catalog) -> dict[str, Any]:
    """The answer with each item's catalog ``fields`` (its id as title when the catalog does
    not know it), and ``because_title`` beside ``because`` when titles are asked for."""
    for item in doc["items"]:
        if "title" in fields:
            item["title"] = catalog.title(item["item"])
            if "because" in item:
                item["because_title"] = catalog.title(item["because"])
        if "tags" in fields:
            item["tags"] = list(catalog.tags(item["item"]))
    return doc


#: A raw query string that is exactly ``k=<digits>``: parsing it as a whole
#: (:attr:`aiohttp.web.Request.query`) gives that one parameter, and a raw
#: string cannot hide a ``&`` or ``=`` in percent escapes as a decoded one can.
_ONLY_K = re.compile(r"k=([0-9]{1,9})")
_DIGITS = re.compile(r"[0-9]{1,9}")
_NOTHING: frozenset[str] = frozenset()
_NO_TAGS: dict[str, frozenset[str]] = {}


#: The query parameters of ``GET /recs/{user}``: the list endpoints' and ``recent``.
RECS_QUERY = QUERY_PARAMETERS | {"recent"}


def parse_recent(raw: str | None) -> int:
    """``recent`` from the query: how many of the user's newest items to add, 0 to
    :data:`schemas.recent.RECENT_LENGTH` (what the worker stores); 0 when absent."""
    if raw is None:
        return 0
    if _DIGITS.fullmatch(raw) is None or int(raw) > RECENT_LENGTH:
        raise ApiError(
            400,
            "bad_recent",
            f"recent must be a whole number from 0 to {RECENT_LENGTH} (the newest items "
            f"stored per user), got {raw[:40]!r}",
        )
    return int(raw)


async def answer(store: RecsStore, user: str, asked: Asked, recent: int = 0) -> bytes:
    """The response body: personal list when there is a readable one, else the fallback;
    with ``recent``, the user's newest items beside it (read in the same round trip)."""
    down = _NOTHING
    history: list[dict[str, Any]] | None = None
    try:
        if recent:
            data, down, raw_recent = await store.user_list_recent(user)
            history = _recent_items(user, raw_recent, recent)
        else:
            data, down = await store.user_list(user)
        if asked.tags or asked.fields:
            await store.ensure_catalog()
        if data is not None:
            doc, source = render(
                user, data, asked, store.catalog, down, names=await store.item_names(data)
            )
            TALLY.served(source)
            return await finish(store, _with_recent(doc, history, asked, store), asked, down)
    except CorruptList as exc:
        _skip_corrupt(f"list of user {user!r}", exc)
    TALLY.served("popular")
    doc = await popular_doc(store, user, asked, down)
    return await finish(store, _with_recent(doc, history, asked, store), asked, down)


def _recent_items(user: str, raw: bytes | None, n: int) -> list[dict[str, Any]]:
    """The user's ``n`` newest items from the stored field; none (counted, logged) for a
    field that does not parse: a bad history never costs the list."""
    try:
        return decode_recent(raw, n)
    except ValueError as exc:
        _skip_corrupt(f"recent history of user {user!r}", CorruptList(str(exc)))
        return []


def _with_recent(
    doc: dict[str, Any], history: list[dict[str, Any]] | None, asked: Asked, store: RecsStore
) -> dict[str, Any]:
    """The answer with its ``recent`` field when one was asked for (titles with
    ``fields=title``, as the list's items have them)."""
    if history is None:
        return doc
    if "title" in asked.fields:
        for entry in history:
            entry["title"] = store.catalog.title(entry["item"])
    doc["recent"] = history
    return doc


async def popular_doc(
    store: RecsStore, user: str | None, asked: Asked, down: frozenset[str]
) -> dict[str, Any]:
    """The popular fallback under the request's filters (empty when there is none)."""
    try:
        popular = await store.popular()
        if popular is not None:
            names = await store.item_names(popular)
            return render(user, popular, asked, store.catalog, down, "popular", names)[0]
    except CorruptList as exc:
        _skip_corrupt("popular list", exc)
    return envelope(user, "popular", None, None, None, [])


async def finish(
    store: RecsStore, doc: dict[str, Any], asked: Asked, down: frozenset[str]
) -> bytes:
    """The body of an answer: filled from the popular list when a tag filter left fewer than
    ``k`` (see :func:`fill`), with the catalog fields asked for."""
    if asked.tags and len(doc["items"]) < asked.k and doc["source"] != "popular":
        await fill(store, doc, asked, down)
    if asked.fields:
        with_fields(doc, asked.fields, store.catalog)
    return orjson.dumps(doc)


async def fill(store: RecsStore, doc: dict[str, Any], asked: Asked, down: frozenset[str]) -> None:
    """Top a filtered answer up to ``k`` from the popular list under the same filters, each
    added item marked ``"source": "popular"`` and counted in ``filled`` (docs/api.md)."""
    have = {e["item"] for e in doc["items"]}
    more = Asked(asked.k, asked.exclude | have, asked.tags)
    extra = (await popular_doc(store, doc.get("user"), more, down))["items"]
    extra = extra[: asked.k - len(doc["items"])]
    for entry in extra:
        entry["source"] = "popular"
    doc["items"].extend(extra)
    doc["filled"] = len(extra)


def render(
    user: str | None,
    data: bytes,
    asked: Asked,
    catalog: Catalog,
    down: frozenset[str] = _NOTHING,
    source: Source | None = None,
    names: Sequence[str] | None = None,
) -> tuple[dict[str, Any], Source]:
    """The answer's JSON object for one stored ``data`` field and its source; raises
    :class:`CorruptList` on garbage.

    ``names`` is the item table of a compact list (None: the list is JSON).
    ``source`` is the stored one unless given (the popular key's list is
    ``popular`` whatever it says). The first ``k`` stored items that are not
    excluded, not taken down (``down``) and pass the tag filter are served, in
    stored order. Without a tag filter only the first ``k + len(exclude) +
    len(down)`` stored items can be served (each of those ids removes at most
    one), so only those are parsed; with one, :data:`TAG_OVERFETCH` times as
    many, and that many times more again while fewer than ``k`` pass (a
    compact list; a JSON one is parsed whole).
    """
    k, tags = asked.k, asked.tags
    skip = asked.exclude | down if down else asked.exclude
    none = _NOTHING
    # the catalog's tag sets are built at the first filtered answer after each reload
    tag_set = (catalog.tag_sets if tags else _NO_TAGS).get
    keep = tags.passes_set
    wanted = k + len(skip)
    if names is not None:  # the codec built the entries, typed and shaped as served
        if tags:
            wanted *= TAG_OVERFETCH
        while True:
            try:
                doc = parse_compact(data, names, wanted)
            except ValueError as exc:
                raise CorruptList(str(exc)) from exc
            parsed = len(doc["items"])
            entries = doc["items"]
            # a popular list's scale: its first stored item, before any filter
            top = entries[0]["score"] if entries else 0.0
            if skip or tags:
                entries = doc["items"] = [
                    e
                    for e in entries
                    if e["item"] not in skip and (not tags or keep(tag_set(e["item"], none)))
                ]
            if len(entries) >= k or parsed < wanted:  # enough, or the whole list was read
                break
            wanted *= TAG_OVERFETCH
        del entries[k:]
        doc["user"] = user
        if source is not None:
            doc["source"] = source
        if doc["source"] == "popular":
            _popularity_as_share(entries, top)
        return doc, doc["source"]
    try:
        # a JSON list (rare: made without a model) is parsed whole under a tag filter
        doc = parse_head(data, wanted) if not tags else orjson.loads(data)
        picked: list[dict[str, Any]] = []
        top = doc["items"][0]["score"] if doc["items"] else 0.0
        for entry in doc["items"]:
            if len(picked) == k:
                break
            item = entry["item"]
            if item in skip or (tags and not keep(tag_set(item, none))):
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
            origin = entry.get("source")
            if origin is not None:  # an item the model does not know: its vector's source
                out["source"] = _ITEM_SOURCES[origin]
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
    return envelope(user, source, version, updated_at, written_at, picked, variant), source


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


#: How many more stored items a tag-filtered answer parses than it could serve unfiltered,
#: and by how much more each time fewer than ``k`` passed: parsing all 150 items of a
#: list cost the filtered request twice the plain one's time.
TAG_OVERFETCH = 3

#: The stored ``source`` values, each to itself (a lookup that refuses any other value).
_SOURCES: dict[str, Source] = {"personal": "personal", "popular": "popular"}
#: The stored ``source`` of an entry, on an interim item only (schemas.interim: where its
#: vector comes from), each to itself: an unknown value makes the list corrupt.
_ITEM_SOURCES: dict[str, str] = {"fold": "fold", "content": "content"}


def _skip_corrupt(what: str, exc: CorruptList) -> None:
    REDIS_ERRORS.labels("corrupt").inc()
    log.warning("skipping the unreadable %s: %s", what, exc)
