"""Request parameters of ``GET /recs/{user}``, checked against the event contract and the settings.

User and item ids follow the bounds of ``user_id`` and ``item_id`` in
``schemas/watch.v1.json``, read from that file rather than copied, so an id the
API accepts is exactly an id an event can carry; any other id can have no list
and gets a 400 that says why instead of a silent fallback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from multidict import MultiMapping

from schemas.validator import load_schema
from serving.errors import ApiError

#: ``k`` is a plain decimal number; ``int()`` alone would also take " 7", "+7", "1_0" and "٧".
_DIGITS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class IdRule:
    """The length and character bounds of one id field of the event contract."""

    field: str
    pattern: re.Pattern[str]
    min_length: int
    max_length: int

    @classmethod
    def from_contract(cls, field: str, event_type: str = "watch") -> IdRule:
        prop: dict[str, Any] = load_schema(event_type)["properties"][field]  # type: ignore[arg-type]
        return cls(
            field=field,
            pattern=re.compile(prop["pattern"]),
            min_length=int(prop["minLength"]),
            max_length=int(prop["maxLength"]),
        )

    def accepts(self, value: str) -> bool:
        """True when ``value`` is within bounds.

        ``fullmatch``, not ``match``: ``$`` in a Python regex also matches
        before a trailing newline, which a decoded ``%0A`` in a URL can supply.
        """
        return (
            self.min_length <= len(value) <= self.max_length
            and self.pattern.fullmatch(value) is not None
        )

    def bounds(self) -> str:
        return f"{self.min_length}-{self.max_length} characters matching {self.pattern.pattern}"


USER_ID = IdRule.from_contract("user_id")
ITEM_ID = IdRule.from_contract("item_id")


def parse_user(user: str) -> str:
    """The user id from the path, or a 400 naming the contract's bounds."""
    if not USER_ID.accepts(user):
        raise ApiError(
            400, "bad_user", f"user id {_preview(user)} is outside the contract: {USER_ID.bounds()}"
        )
    return user


#: The query parameters of ``GET /recs/{user}``.
QUERY_PARAMETERS = frozenset({"k", "exclude", "fields", "tags", "exclude_tags"})
#: What ``fields=`` may add to each item, from the item catalog.
ITEM_FIELDS = ("title", "tags")


def check_query(query: MultiMapping[str], known: frozenset[str] = QUERY_PARAMETERS) -> None:
    """A 400 for an unknown query parameter, or ``k`` given twice.

    A typo (``K=``, ``exlude=``) would otherwise be ignored in silence, and the
    client would get an answer to a question it did not ask; so would one of two
    different ``k``.
    """
    unknown = sorted(set(query.keys()) - known)
    if unknown:
        raise ApiError(
            400,
            "bad_query",
            f"unknown query parameter {_preview(unknown[0])}; known: " + ", ".join(sorted(known)),
        )
    if len(query.getall("k", ())) > 1:
        raise ApiError(400, "bad_k", "k is given more than once")


def parse_k(raw: str | None, default: int, maximum: int) -> int:
    """``k`` from the query: a whole number from 1 to ``maximum``; ``default`` when absent."""
    if raw is None:
        return default
    if _DIGITS.fullmatch(raw) is None or not 1 <= int(raw) <= maximum:
        raise ApiError(
            400, "bad_k", f"k must be a whole number from 1 to {maximum}, got {_preview(raw)}"
        )
    return int(raw)


def parse_exclude(values: Iterable[str]) -> frozenset[str]:
    """Item ids to drop, from ``exclude=a,b`` and/or repeated ``exclude=`` parameters.

    Empty entries (``exclude=`` or ``a,,b``) are ignored; an id outside the
    contract is a 400, since it cannot name any item and is likely a client bug.
    """
    excluded: set[str] = set()
    for value in values:
        for item in value.split(","):
            if not item:
                continue
            if not ITEM_ID.accepts(item):
                raise ApiError(
                    400,
                    "bad_exclude",
                    f"excluded item id {_preview(item)} is outside the contract: "
                    f"{ITEM_ID.bounds()}",
                )
            excluded.add(item)
    return frozenset(excluded)


def parse_fields(values: Iterable[str]) -> frozenset[str]:
    """Catalog fields to add to each item (``fields=title,tags``); empty entries are ignored."""
    wanted: set[str] = set()
    for value in values:
        for name in value.split(","):
            if not name:
                continue
            if name not in ITEM_FIELDS:
                raise ApiError(
                    400,
                    "bad_fields",
                    f"unknown field {_preview(name)}; known: {', '.join(ITEM_FIELDS)}",
                )
            wanted.add(name)
    return frozenset(wanted)


def _preview(value: str, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: A tag as ``schemas/item.v1.json`` bounds it, read from that file.
_TAG = load_schema("item")["properties"]["tags"]["items"]
_TAG_PATTERN = re.compile(_TAG["pattern"])


@dataclass(frozen=True, slots=True)
class TagFilter:
    """``?tags=`` (an item passes with any of them) and ``&exclude_tags=`` (it fails with any
    of them); an item the catalog does not know has no tags."""

    any_of: frozenset[str] = frozenset()
    none_of: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.any_of or self.none_of)

    def passes(self, tags: Iterable[str]) -> bool:
        """Whether an item with ``tags`` passes."""
        return self.passes_set(frozenset(tags))

    def passes_set(self, tags: frozenset[str]) -> bool:
        """:meth:`passes` for tags already a set (:attr:`serving.catalog.Catalog.tag_sets`)."""
        if self.any_of and self.any_of.isdisjoint(tags):
            return False
        return self.none_of.isdisjoint(tags)


def parse_tags(values: Iterable[str], name: str) -> frozenset[str]:
    """Tags from ``name=a,b`` and/or repeated parameters; empty entries are ignored, a tag
    outside the item contract is a 400 (no item can carry it)."""
    tags: set[str] = set()
    for value in values:
        for tag in value.split(","):
            if not tag:
                continue
            if len(tag) > _TAG["maxLength"] or _TAG_PATTERN.fullmatch(tag) is None:
                raise ApiError(
                    400,
                    f"bad_{name}",
                    f"tag {_preview(tag)} in {name} is outside the item contract: 1 to "
                    f"{_TAG['maxLength']} characters, no commas or control characters",
                )
            tags.add(tag)
    return frozenset(tags)


def parse_tag_filter(query: MultiMapping[str]) -> TagFilter:
    """The query's ``tags`` and ``exclude_tags``."""
    return TagFilter(
        parse_tags(query.getall("tags", ()), "tags"),
        parse_tags(query.getall("exclude_tags", ()), "exclude_tags"),
    )
