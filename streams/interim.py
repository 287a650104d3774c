"""The fold-in agent's side of items the model does not know (issue 23): contributions
out, interim vectors in.

**Contributions.** An event on an item the current model does not know (an
*interim* item) makes an entry for the item's statistics
(:mod:`schemas.interim`): the user's vector and stored confidence just after
the event (:func:`contributions`), and the contribution it replaces, the
user's previous one to the item under the same version, which the user's
state keeps (:attr:`schemas.state.UserState.interim`). A forget takes every
one of the user's contributions back. A batch's entries go out as one message
per item on the contributions topic, keyed by item id, and the pipeline waits
for the broker's acknowledgement *before* it writes the users' states: a crash
in between redelivers the events, which make the same entries again (each is
a function of the state before the batch and the events up to it, not of how
the batch was cut), and the item agent counts an entry at or below the stamp
it already applied from that source partition once (:mod:`streams.items`).

**Interim vectors.** The item agent writes each interim item's vector to the
version's hash in Redis and raises the version's generation;
:class:`InterimVectors` reads the generation with each batch and the whole
hash when it moved, so every worker ranks the model's items plus the interim
ones (:func:`models.item_foldin.merge_interim`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from freshrec.kafka_producer import OutgoingRecord
from freshrec.redis_client import AsyncRedis
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from models.recommender import Recommender
from models.weighting import user_confidences
from schemas.interim import (
    Contribution,
    ContributionMessage,
    Entry,
    decode_vectors,
    encode_message,
    generation_key,
    interim_key,
)
from schemas.state import InterimContribution
from streams.batch import InterimTouch
from streams.delivery import RecordProducer, send_all


def is_interim(recommender: Recommender | None) -> Callable[[str], bool] | None:
    """The ``is_interim`` predicate of :func:`streams.batch.step` for ``recommender``:
    None (record nothing) without a model or without the user Gram its versions carry."""
    if recommender is None or recommender.user_gram is None:
        return None
    known = recommender.item_ids

    def unknown(item: str) -> bool:
        return item not in known

    return unknown


def contributions(
    touches: Sequence[InterimTouch], recommender: Recommender
) -> tuple[list[ContributionMessage], dict[str, dict[str, InterimContribution]]]:
    """The batch's messages (one per item, entries in message order) and each touched
    user's contributions after the batch (what their state keeps).

    An event on an interim item replaces the user's contribution to it. Any
    event of a user also makes again, under ``recommender``'s version, their
    contributions made under an older one to items this version still does not
    know (stamped with the event: the hand-over at a retrain), and drops those
    to items it knows. A forget takes every contribution back.
    """
    version = recommender.version_id
    known = recommender.item_ids
    events = [t for t in touches if t.item is not None]
    confidences = [user_confidences(t.history, recommender.weighting) for t in events]
    rows, _ = recommender.encode(confidences)
    positive = np.bincount(
        np.repeat(np.arange(rows.n_users), rows.lengths()),
        weights=rows.confidences > 0,
        minlength=rows.n_users,
    )
    vectors = recommender.foldin.user_vectors(rows) if events else np.zeros((0, 0))
    alpha = recommender.foldin.alpha
    at: dict[int, int] = {id(t): row for row, t in enumerate(events)}
    running: dict[str, dict[str, InterimContribution]] = {}
    by_item: dict[str, list[Entry]] = {}

    def add(t: InterimTouch, item: str, old: Contribution | None, new: Contribution | None) -> None:
        by_item.setdefault(item, []).append(Entry(t.user, t.source, t.offset, old, new))

    for t in touches:
        held = running.get(t.user)
        if held is None:
            held = running[t.user] = dict(t.before)
        if t.item is None:  # a forget: every contribution under this version back
            for item, (v, c, taken_x) in held.items():
                if v == version:
                    add(t, item, (c, taken_x), None)
            held.clear()
            continue
        row = at[id(t)]
        conf = confidences[row]
        x = tuple(vectors[row].astype(np.float64).tolist()) if positive[row] > 0 else None
        stale = [i for i, c in held.items() if c[0] != version]
        wanted = [i for i in stale if i not in known]
        for item in stale:
            del held[item]
        if t.item not in known and t.item not in wanted:
            wanted.append(t.item)
        for item in wanted:
            old = held.pop(item, None)
            taken = (old[1], old[2]) if old is not None else None
            c = conf.get(item, 0.0)
            new = (alpha * c, x) if x is not None and c != 0 else None
            if taken is None and new is None:
                continue
            add(t, item, taken, new)
            if new is not None:
                held[item] = (version, new[0], new[1])
    messages = [ContributionMessage(version, item, entries) for item, entries in by_item.items()]
    return messages, running


class ContributionSender:
    """Sends a batch's contribution messages and waits for the broker's acknowledgement."""

    def __init__(self, settings: Settings, producer: RecordProducer, retry: RetryPolicy) -> None:
        self._topic = settings.topic_contributions
        self._producer = producer
        self._retry = retry

    async def send(self, messages: Sequence[ContributionMessage]) -> None:
        """Resending after a failure is harmless: the item agent counts a stamp once."""
        if not messages:
            return
        records = [
            OutgoingRecord(self._topic, m.item.encode(), encode_message(m)) for m in messages
        ]
        await self._retry.call_async(lambda: send_all("contributions", self._producer, records))


@dataclass(frozen=True, slots=True)
class InterimBlock:
    """One version's interim items as the list builder ranks them."""

    version: str | None
    ids: tuple[str, ...]
    vectors: np.ndarray
    """``len(ids) x f`` float32."""
    sources: tuple[str, ...]


EMPTY = InterimBlock(None, (), np.zeros((0, 0), dtype=np.float32), ())


#: How long a worker ranks with the interim vectors it has before asking Redis whether
#: they moved (the same bound as the takedown set's, :data:`streams.catalog.TAKEDOWN_MAX_AGE_S`):
#: at full load batches start milliseconds apart, and a ``GET`` each was a round trip
#: awaited before every batch's work. A new item's vector reaches lists at most this
#: much later; its goal is two seconds.
INTERIM_MAX_AGE_S = 0.1


class InterimVectors:
    """Every worker's copy of a version's interim vectors, reread when its generation moves.

    The generation is asked again only when the last answer is older than
    ``max_age_s`` (0: every call asks) or the version changed."""

    def __init__(self, settings: Settings, client: AsyncRedis, max_age_s: float = 0.0) -> None:
        self._prefix = settings.key_prefix
        self._client = client
        self._max_age_s = max_age_s
        #: ``time.monotonic()`` when the last generation read that reached Redis was sent.
        self._read_at = -math.inf
        self._version: str | None = None
        self._generation: object = None
        self.block = EMPTY

    async def refresh(self, version: str | None) -> InterimBlock:
        """The block of ``version``: one ``GET`` per call older than ``max_age_s``, an
        ``HGETALL`` when the generation moved."""
        if version is None:
            self._version, self._generation, self.block = None, None, EMPTY
            return EMPTY
        sent_at = time.monotonic()
        if version == self._version and sent_at - self._read_at < self._max_age_s:
            return self.block
        generation = await self._client.get(generation_key(self._prefix, version))
        self._read_at = sent_at
        if version == self._version and generation == self._generation:
            return self.block
        raw = await self._client.hgetall(interim_key(self._prefix, version))
        found = decode_vectors(raw)
        ids = tuple(sorted(found))
        vectors = (
            np.stack([found[i].vector for i in ids]).astype(np.float32)
            if ids
            else np.zeros((0, 0), dtype=np.float32)
        )
        self._version, self._generation = version, generation
        self.block = InterimBlock(version, ids, vectors, tuple(found[i].source for i in ids))
        return self.block
