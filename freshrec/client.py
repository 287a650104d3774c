"""A typed client of the freshrec API for Python back-ends: :class:`Client`, :class:`AsyncClient`.

``GET /recs/{user}`` and ``POST /events`` as calls with typed answers, so a
site back-end need not hand-roll HTTP, parse bodies or guess error shapes:

* an answer the API refuses raises :class:`ApiError` with the HTTP status, the
  API's error ``code`` and ``message`` (and the body, which for ``POST
  /events`` says what became of each event);
* a 503 (Redis or the broker unreachable from the API) is retried after the
  ``Retry-After`` the API sends, at most ``retries`` times, each wait capped
  at ``max_wait_s``; sending a batch of events again is safe (the worker drops
  an ``event_id`` it has already seen). Past that the 503 is raised;
* an API that cannot be reached at all raises
  :class:`~freshrec.errors.TransientError`.

The sync client uses the standard library alone; the asyncio one uses aiohttp
(a dependency already). Both build their requests from :data:`ROUTES`, which a
test checks against ``serving/openapi.json``, the API's contract. Events are
mappings as the schemas define them (``schemas.events.to_dict`` turns a typed
event into one); the API validates them, as it does for any client.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from freshrec.errors import FreshrecError, TransientError

if TYPE_CHECKING:
    import aiohttp

#: Every (method, path template) the clients call: each must be in the API's OpenAPI document.
ROUTES = {
    "recs": ("GET", "/recs/{user}"),
    "events": ("POST", "/events"),
}

#: The wait before a retry when a 503 carries no usable ``Retry-After``, in seconds.
DEFAULT_RETRY_AFTER_S = 1.0


class ApiError(FreshrecError):
    """The API refused a request: its HTTP ``status``, error ``code`` and ``message``.

    ``body`` is the whole decoded answer (``POST /events`` puts each event's
    outcome in it, under ``results``); None when the answer was not JSON.
    """

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended item; ``title``, ``because_title`` and ``tags`` only when asked for.
    ``source`` only on some: ``fold`` or ``content`` on an item the model does not know
    yet (where its vector comes from), ``popular`` on one a tag filter filled in."""

    item: str
    score: float
    because: str | None = None
    title: str | None = None
    because_title: str | None = None
    tags: tuple[str, ...] | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class RecentItem:
    """One of the user's own newest items (``recent=`` asked): its newest interaction's
    time (epoch ms) and kind; ``title`` only when asked for."""

    item: str
    ts: int
    kind: Literal["watch", "rate"]
    title: str | None = None


@dataclass(frozen=True, slots=True)
class Recommendations:
    """A user's list as ``GET /recs/{user}`` answers it (see ``docs/api.md``).

    ``recent`` is the user's own newest items, newest first, when the call asked
    for them (``recent=n``; empty for a user without a list); None otherwise.
    """

    user: str
    source: Literal["personal", "popular"]
    model_version: str | None
    updated_at: int | None
    written_at: int | None
    items: tuple[Recommendation, ...]
    recent: tuple[RecentItem, ...] | None = None


@dataclass(frozen=True, slots=True)
class EventResult:
    """What became of one posted event: ``accepted``, ``rejected`` (invalid: ``reason``,
    ``field``, ``rule``) or ``failed`` (not acknowledged by the broker)."""

    index: int
    status: Literal["accepted", "rejected", "failed"]
    event_id: str | None = None
    reason: str | None = None
    field: str | None = None
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class EventsAnswer:
    """``POST /events``' answer when at least one event was accepted (200 or 207)."""

    accepted: int
    rejected: int
    results: tuple[EventResult, ...]


def recs_path(
    user: str, k: int | None, exclude: Iterable[str], fields: Iterable[str], recent: int = 0
) -> str:
    """The path and query of ``GET /recs/{user}`` (the user id percent-encoded, dots too)."""
    quoted = urllib.parse.quote(user, safe="").replace(".", "%2E")
    query: list[tuple[str, str]] = []
    if k is not None:
        query.append(("k", str(k)))
    exclude = list(exclude)
    if exclude:
        query.append(("exclude", ",".join(exclude)))
    fields = list(fields)
    if fields:
        query.append(("fields", ",".join(fields)))
    if recent:
        query.append(("recent", str(recent)))
    path = ROUTES["recs"][1].format(user=quoted)
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def parse_recs(body: Any) -> Recommendations:
    """A ``GET /recs`` body as :class:`Recommendations`."""
    items = tuple(
        Recommendation(
            item=i["item"],
            score=float(i["score"]),
            because=i.get("because"),
            title=i.get("title"),
            because_title=i.get("because_title"),
            tags=tuple(i["tags"]) if "tags" in i else None,
            source=i.get("source"),
        )
        for i in body["items"]
    )
    return Recommendations(
        user=body["user"],
        source=body["source"],
        model_version=body["model_version"],
        updated_at=body["updated_at"],
        written_at=body["written_at"],
        items=items,
        recent=None
        if "recent" not in body
        else tuple(
            RecentItem(r["item"], int(r["ts"]), r["kind"], r.get("title")) for r in body["recent"]
        ),
    )


def parse_events(body: Any) -> EventsAnswer:
    """A ``POST /events`` body (200 or 207) as :class:`EventsAnswer`."""
    results = tuple(
        EventResult(
            index=r["index"],
            status=r["status"],
            event_id=r.get("event_id"),
            reason=r.get("reason"),
            field=r.get("field"),
            rule=r.get("rule"),
        )
        for r in body["results"]
    )
    return EventsAnswer(accepted=body["accepted"], rejected=body["rejected"], results=results)


def events_body(events: Sequence[Mapping[str, Any]]) -> bytes:
    return json.dumps(list(map(dict, events)), separators=(",", ":")).encode()


def api_error(status: int, raw: bytes) -> ApiError:
    """The :class:`ApiError` of an error answer (the API's ``{"error": {code, message}}``)."""
    try:
        body = json.loads(raw)
        error = body["error"]
        return ApiError(status, str(error["code"]), str(error["message"]), body)
    except (ValueError, KeyError, TypeError):
        text = raw.decode(errors="replace").strip()[:200]
        return ApiError(status, "unexpected", text or f"HTTP {status}", None)


def retry_wait_s(header: str | None, cap_s: float) -> float:
    """Seconds to wait before retrying a 503: its ``Retry-After`` (seconds), capped."""
    try:
        wait = float(header) if header is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:  # an HTTP date: the API never sends one
        wait = DEFAULT_RETRY_AFTER_S
    return min(max(wait, 0.0), cap_s)


class _Settings:
    """What both clients share: the address, the token and the retry bounds."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        retries: int = 3,
        max_wait_s: float = 30.0,
    ) -> None:
        if retries < 0 or timeout_s <= 0 or max_wait_s < 0:
            raise ValueError("retries and max_wait_s must be >= 0, timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.max_wait_s = max_wait_s
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"


class Client(_Settings):
    """A blocking client (standard library only): ``Client("http://api:8080", token=...)``.

    Keyword arguments: ``token`` (``FRESHREC_API_TOKEN`` of the API), ``timeout_s``
    per request, ``retries`` of a 503 and ``max_wait_s``, the longest wait before one.
    """

    def recs(
        self,
        user: str,
        k: int | None = None,
        *,
        exclude: Iterable[str] = (),
        fields: Iterable[str] = (),
        recent: int = 0,
    ) -> Recommendations:
        """The user's top ``k`` (the API's default when None), ``exclude``\\ d items left out;
        with ``recent`` (1-10), the user's own newest items too, read in the same round trip
        (:attr:`Recommendations.recent`)."""
        path = recs_path(user, k, exclude, fields, recent)
        return parse_recs(self._call("GET", path, None))

    def post_events(self, events: Sequence[Mapping[str, Any]]) -> EventsAnswer:
        """Send ``events``; returns once the broker has the valid ones. Raises
        :class:`ApiError` when none is valid (400, each reason in ``body``) or, after the
        retries, when the broker did not acknowledge them (503)."""
        return parse_events(self._call("POST", ROUTES["events"][1], events_body(events)))

    def _call(self, method: str, path: str, data: bytes | None) -> Any:
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.base_url + path, data=data, method=method, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                if exc.code != 503 or attempt == self.retries:
                    raise api_error(exc.code, raw) from None
                time.sleep(retry_wait_s(exc.headers.get("Retry-After"), self.max_wait_s))
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise TransientError(f"cannot reach the API at {self.base_url}: {reason}") from None
        raise AssertionError("unreachable: the last attempt returns or raises")


class AsyncClient(_Settings):
    """The asyncio client (aiohttp): ``async with AsyncClient(url) as api: await api.recs(u)``.

    Same arguments and answers as :class:`Client`; one connection pool per client.
    """

    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        import aiohttp

        self._session = aiohttp.ClientSession(
            headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def recs(
        self,
        user: str,
        k: int | None = None,
        *,
        exclude: Iterable[str] = (),
        fields: Iterable[str] = (),
        recent: int = 0,
    ) -> Recommendations:
        """:meth:`Client.recs`."""
        path = recs_path(user, k, exclude, fields, recent)
        return parse_recs(await self._call("GET", path, None))

    async def post_events(self, events: Sequence[Mapping[str, Any]]) -> EventsAnswer:
        """:meth:`Client.post_events`."""
        return parse_events(await self._call("POST", ROUTES["events"][1], events_body(events)))

    async def _call(self, method: str, path: str, data: bytes | None) -> Any:
        import aiohttp
        from yarl import URL

        if self._session is None:
            raise RuntimeError("use the AsyncClient as 'async with AsyncClient(...) as api'")
        headers = {"Content-Type": "application/json"} if data is not None else None
        url = URL(self.base_url + path, encoded=True)  # recs_path has percent-encoded it
        for attempt in range(self.retries + 1):
            try:
                async with self._session.request(
                    method, url, data=data, headers=headers
                ) as response:
                    raw = await response.read()
                    if response.status < 400:
                        return json.loads(raw)
                    if response.status != 503 or attempt == self.retries:
                        raise api_error(response.status, raw)
                    wait = retry_wait_s(response.headers.get("Retry-After"), self.max_wait_s)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise TransientError(
                    f"cannot reach the API at {self.base_url}: {exc or type(exc).__name__}"
                ) from None
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")
