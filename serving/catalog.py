"""The item catalog (id, title, tags), so people see titles where the lists hold ids, and
tag filters know each item's tags.

The catalog is the item table in Redis (:mod:`schemas.items`), which the
store reads (:class:`serving.store.RecsStore`); a file given at start is read
under it, for a catalog not yet published (``freshrec catalog publish FILE``
publishes one).

Loaded once at start from ``FRESHREC_API_CATALOG`` (``freshrec api --catalog``)
in one of three formats, told apart by the file's name:

* MovieLens ``u.item`` (``*.item``): ``id|title|release|video release|url|19 genre flags``
  in Latin-1; the flags become tags (genre names from ``u.genre`` beside it, else
  MovieLens 100k's own list);
* CSV (``*.csv``) with a header naming at least ``id`` and ``title``; ``tags``
  separated by ``|``;
* JSON lines (``*.jsonl``, ``*.json``): ``{"id": ..., "title": ..., "tags": [...]}``.

An unknown id shows as itself: the catalog decorates answers, it never
decides them. A file that cannot be read or parsed fails the API at start
with one line naming the file and the line (a :class:`~freshrec.errors.ConfigError`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import orjson

from freshrec.errors import ConfigError

#: MovieLens 100k's genres, in the order of ``u.item``'s flags (its ``u.genre``).
MOVIELENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


@dataclass(frozen=True)
class Entry:
    """One item's title, tags and availability (a file says nothing of the last: available)."""

    title: str
    tags: tuple[str, ...] = ()
    available: bool = True


@dataclass(frozen=True)
class Catalog:  # not slotted: cached_property keeps its value in the instance's __dict__
    """Item id -> :class:`Entry`; empty when no catalog is configured."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.entries)

    def title(self, item: str) -> str:
        """The item's title, or its id when the catalog does not know it."""
        entry = self.entries.get(item)
        return item if entry is None else entry.title

    def tags(self, item: str) -> tuple[str, ...]:
        entry = self.entries.get(item)
        return () if entry is None else entry.tags

    @cached_property
    def tag_sets(self) -> dict[str, frozenset[str]]:
        """Item id -> its tags as a set, built once per catalog: the tag filters test every
        candidate of every filtered answer against them."""
        return {item: frozenset(entry.tags) for item, entry in self.entries.items() if entry.tags}


def load(path: str | Path) -> Catalog:
    """Read a catalog file (format by name, see the module doc); ``ConfigError`` when it fails."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the item catalog {path}: {exc.strerror or exc} "
            "(set FRESHREC_API_CATALOG or --catalog to a readable file, or leave it empty)"
        ) from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = _jsonl(path, raw)
    elif suffix == ".csv":
        rows = _csv(path, raw)
    elif suffix == ".item":
        rows = _movielens(path, raw)
    else:
        raise ConfigError(
            f"item catalog {path}: unknown format; name it *.item (MovieLens u.item), "
            "*.csv (id,title,tags) or *.jsonl"
        )
    return Catalog(dict(rows))


def _jsonl(path: Path, raw: bytes) -> Iterator[tuple[str, Entry]]:
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
            item, title = doc["id"], doc["title"]
            tags = doc.get("tags") or []
            if not isinstance(tags, list):
                tags = [t for t in str(tags).split("|") if t]
            yield str(item), Entry(str(title), tuple(str(t) for t in tags))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"item catalog {path}, line {number}: not an object with id and title ({exc})"
            ) from None


def _csv(path: Path, raw: bytes) -> Iterator[tuple[str, Entry]]:
    reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig", errors="replace")))
    if not reader.fieldnames or not {"id", "title"} <= set(reader.fieldnames):
        raise ConfigError(f"item catalog {path}: the CSV header must name id and title (and tags)")
    for row in reader:
        tags = tuple(t for t in (row.get("tags") or "").split("|") if t)
        yield row["id"], Entry(row["title"], tags)


def _movielens(path: Path, raw: bytes) -> Iterator[tuple[str, Entry]]:
    genres = _movielens_genres(path.parent / "u.genre")
    for number, line in enumerate(raw.decode("latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 2:
            raise ConfigError(f"item catalog {path}, line {number}: not id|title|... (u.item)")
        flags = parts[5:]
        tags = tuple(g for g, flag in zip(genres, flags, strict=False) if flag.strip() == "1")
        yield parts[0], Entry(parts[1], tags)


def _movielens_genres(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="latin-1")
    except OSError:
        return MOVIELENS_GENRES
    named = [line.split("|")[0] for line in text.splitlines() if "|" in line]
    return tuple(named) or MOVIELENS_GENRES
