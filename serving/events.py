"""``POST /events`` and ``POST /items``: events and item records over HTTP, for site
back-ends that do not speak Kafka.

``POST /items`` takes item records (``schemas/item.v1.json``, ``type`` optional)
exactly as ``POST /events`` takes events, with the same answers; each valid
record is produced to the items topic keyed by item id
(:func:`schemas.items.as_message`). What follows says "event" for both.

The body is a JSON array of events (``application/json``; one object is a
batch of one) or newline-delimited JSON (``application/x-ndjson``). Each event
is validated alone by :mod:`schemas.batch` (the validator the worker and the
publisher use); the valid ones are produced to their topics keyed by user id
(:func:`schemas.wire.as_message`, as the publisher does) and the answer comes
only after the broker acknowledged them all. The answer says, per event, what
became of it:

* 200: every event accepted; 207: some accepted, some rejected (the body says which);
* 400: none valid (the same per-event body, under an error), or a body that is
  not a batch at all; 413: a body or a batch over its limit; 415: another content type;
* 503 with ``Retry-After``: the broker did not acknowledge (some of) the valid
  events in time; the body says which. Sending the whole batch again is safe:
  the worker drops an ``event_id`` it has already seen.

The producer is made on the first ``POST /events`` and closed with the app
(:func:`producer_lifetime`); after a send that timed out or failed for good
(a broker that lost its state no longer knows the idempotent producer's id)
it renews itself at the next send:
``GET /recs`` never waits for it, a read-only deployment never starts one, and
the API starts with no broker reachable (the route then answers 503). It is
the one asyncio producer of :mod:`freshrec.kafka_producer`, which ``streams``
shares; ``serving`` never imports ``streams``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from freshrec.errors import BadInputError
from freshrec.kafka_producer import AsyncBatchProducer
from schemas import items
from schemas.batch import (
    ItemOutcome,
    Outcome,
    parse_array,
    parse_item_array,
    parse_item_lines,
    parse_lines,
)
from schemas.items import ItemRecord
from schemas.validator import Rejection
from schemas.wire import as_message
from serving.context import API, ApiContext
from serving.errors import ApiError, retry_after_header
from serving.metrics import EVENTS

T = TypeVar("T")

#: Content types of a newline-delimited body; ``application/json`` is an array.
LINES_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-seq"})


async def handle_events(request: web.Request) -> web.Response:
    return await _ingest(request, _parser(request.content_type, parse_lines, parse_array))


async def handle_items(request: web.Request) -> web.Response:
    return await _ingest(request, _parser(request.content_type, parse_item_lines, parse_item_array))


async def _ingest(
    request: web.Request, parse: Callable[[bytes], list[Outcome] | list[ItemOutcome]]
) -> web.Response:
    """Validate each element of the body, produce the valid ones, answer per element."""
    api = request.app[API]
    settings = api.settings
    limit = settings.api_events_max_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(f"the body is {request.content_length} bytes, the limit is {limit}")
    body = await request.read()  # the app's client_max_size is the same limit
    try:
        outcomes = parse(body)
    except BadInputError as exc:
        raise ApiError(400, "bad_body", exc.reason) from None
    if not outcomes:
        raise ApiError(400, "no_events", "the body holds no events")
    if len(outcomes) > settings.api_events_max_count:
        raise _too_large(
            f"the body holds {len(outcomes)} events, the limit is "
            f"{settings.api_events_max_count}; send them in several requests"
        )
    results: list[dict[str, Any]] = [_judged(i, o) for i, o in enumerate(outcomes)]
    valid = [(i, o) for i, o in enumerate(outcomes) if not isinstance(o, Rejection)]
    rejected = len(outcomes) - len(valid)
    EVENTS.labels("rejected").inc(rejected)
    if not valid:
        raise ApiError(
            400,
            "no_valid_events",
            f"none of the {len(outcomes)} events is valid; results say why for each",
            extra={"accepted": 0, "rejected": rejected, "results": results},
        )
    producer = _producer(api)
    errors = await producer.send(
        [
            items.as_message(settings, ev)
            if isinstance(ev, ItemRecord)
            else as_message(settings, ev)
            for _, ev in valid
        ]
    )
    failed = 0
    for (index, _), error in zip(valid, errors, strict=True):
        if error is not None:
            failed += 1
            results[index] = {**results[index], "status": "failed", "reason": error}
    accepted = len(valid) - failed
    EVENTS.labels("accepted").inc(accepted)
    summary = {"accepted": accepted, "rejected": rejected, "results": results}
    if failed:
        EVENTS.labels("failed").inc(failed)
        first = next(r["reason"] for r in results if r["status"] == "failed")
        raise ApiError(
            503,
            "unavailable",
            f"the broker did not acknowledge {failed} of {len(valid)} valid events "
            f"(first: {first}); send them again later",
            retry_after_header(settings),
            extra={**summary, "failed": failed},
        )
    status = 200 if not rejected else 207
    return web.Response(status=status, body=orjson.dumps(summary), content_type="application/json")


def _parser(
    content_type: str, lines: Callable[[bytes], T], array: Callable[[bytes], T]
) -> Callable[[bytes], T]:
    if content_type in LINES_TYPES:
        return lines
    if content_type == "application/json":
        return array
    raise ApiError(
        415,
        "unsupported_media_type",
        f"content type {content_type!r} is not accepted; send application/json (an array of "
        "events) or application/x-ndjson (one event per line)",
    )


def _too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message)


def _judged(index: int, outcome: Outcome | ItemOutcome) -> dict[str, Any]:
    if isinstance(outcome, Rejection):
        return {
            "index": index,
            "status": "rejected",
            "reason": str(outcome),
            "field": outcome.field,
            "rule": outcome.rule,
        }
    if isinstance(outcome, ItemRecord):
        return {"index": index, "status": "accepted", "item_id": outcome.item_id}
    return {"index": index, "status": "accepted", "event_id": outcome.event_id}


def _producer(api: ApiContext) -> AsyncBatchProducer:
    """The app's producer, made on first use (librdkafka connects in the background)."""
    if api.producer_or_none is None:
        api.producer_or_none = AsyncBatchProducer(api.settings)
    return api.producer_or_none


async def producer_lifetime(app: web.Application) -> AsyncIterator[None]:
    """Close the producer, if a request made one, when the app shuts down."""
    yield
    api = app[API]
    producer, api.producer_or_none = api.producer_or_none, None
    if producer is not None:
        await producer.close()
