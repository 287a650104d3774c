"""Sending records to Kafka and waiting until the broker has every one of them.

The worker's changelog records and dead letters must both be durable before
their batch is acked (see docs/worker.md, "Delivery"), and both are sent the
same way: every send is queued first (each returns a future of the broker's
acknowledgement), then all acknowledgements are awaited together, so that a
batch's records travel in a few requests rather than one round trip each. A
broker fault is a :class:`~freshrec.errors.TransientError` for the caller's
retry policy to retry; a resend is harmless, since both kinds of record are
idempotent to their readers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from freshrec.errors import FreshrecError, TransientError


async def send_all(what: str, sends: Iterable[Awaitable[Awaitable[Any]]]) -> None:
    """Queue each of ``sends`` in order, then wait for every acknowledgement.

    ``sends`` yields the producer's send calls (each awaits to a future of its
    acknowledgement); pass a generator, so that nothing is left unsent and
    unawaited when one fails. ``what`` names the records in the error.
    """
    try:
        futures = [await send for send in sends]
        await asyncio.gather(*futures)
    except KafkaError as exc:
        if isinstance(exc, _REFUSED):
            # No retry changes the answer: the batch is split down to the
            # record that causes it (streams.pipeline). Other errors, even the
            # ones aiokafka calls not retriable, may be an outage: retried.
            raise RecordRefusedError(f"{what} write refused: {exc!r}") from exc
        raise TransientError(f"{what} write failed: {exc!r}") from exc


#: Errors that refuse a record for what it is, not for the broker's state.
_REFUSED = (MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError)


class RecordRefusedError(FreshrecError):
    """The broker (or the producer) refused a record for good: retrying cannot help."""
