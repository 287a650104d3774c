"""One micro-batch, start to finish: validate, dedupe, update history, fold in, write.

The order of the steps is the delivery guarantee (docs/worker.md has the
crash-by-crash account):

1. validate every message; an invalid one becomes a dead letter;
2. apply valid events to their users' states, dropping repeated ``event_id``\\ s;
3. make the new states and the dead letters durable in Kafka and wait for the
   broker's acknowledgement;
4. fold every touched user in with one batched call (before step 3's write, in
   fact, so that each state records the top of its new list for the online
   metrics, :mod:`streams.online`) and write their lists to Redis in one
   pipeline (compare-and-set on the list's order token), with the batch's
   online counts;
5. return; only then does the agent ack the batch, and only acked offsets are committed.

Steps 1 and 2 are the pure :func:`streams.batch.step`; this module
orchestrates the rest. Steps 1 to 4's fold-in are :meth:`BatchProcessor.prepare`,
under the lock; the Redis write is :meth:`BatchProcessor.write`, outside it, so
that the next batch can be prepared while this one's pipeline is on the wire.
Writes are issued in batch order by the agent, and each is a compare-and-set
anyway.

A user is "touched" by a duplicate too, and gets their list rewritten from
the state: after a crash between steps 3 and 4 the redelivered events are all
duplicates, and this rewrite is what puts the missing list into Redis.

Model refreshes (:mod:`streams.refresh`: following the model, noticing a
Redis that lost its data) take the same lock as batches, so a refresh never
writes a list computed from a state that a batch is changing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from freshrec.errors import TransientError
from freshrec.redis_client import TRANSIENT_ERRORS
from freshrec.settings import Settings
from schemas.interim import ContributionMessage
from schemas.state import UserState
from schemas.wire import event_types
from streams.batch import (
    Inbound,
    InterimTouch,
    Message,
    StepResult,
    Touched,
    failure_rejection,
    step,
)
from streams.catalog import TakedownReader
from streams.dead_letter import DeadLetter, DeadLetterWriter, count_by_reason
from streams.interim import ContributionSender, InterimVectors, contributions, is_interim
from streams.lists import ListBuilder, UserList
from streams.metrics import WorkerMetrics
from streams.model_follower import ModelFollower
from streams.online import OnlineMetrics, Totals, combine
from streams.online import tally as online_tally
from streams.ownership import Ownership
from streams.popularity import Popularity
from streams.refresh import ListRefresher
from streams.sink import RedisSink
from streams.state import StateTable, Write
from streams.topology import TopologyError

__all__ = ["BatchProcessor", "Inbound", "Message", "PreparedBatch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch whose states are durable and whose lists are built; left: the Redis write."""

    lists: list[UserList]
    forget: list[str]
    event_ts: list[int]
    """Timestamps of the batch's new events, for the freshness metric."""
    fenced: frozenset[int] = frozenset()
    """Partitions revoked before the batch's records were written: nothing of
    theirs was written, and their events must not be acked (streams.ownership)."""
    online: Totals = field(default_factory=dict)
    """The batch's online counts per model version and arm, added to Redis with its lists."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    """The batch's dead letters by reason, added to Redis's tally with its lists."""


class BatchProcessor:
    """Processes micro-batches and model refreshes for the partitions this worker holds."""

    def __init__(
        self,
        settings: Settings,
        state: StateTable,
        dead_letters: DeadLetterWriter,
        sink: RedisSink,
        follower: ModelFollower,
        metrics: WorkerMetrics,
        ownership: Ownership,
        takedown: TakedownReader | None = None,
        on_data_lost: Callable[[], None] | None = None,
        contributions: ContributionSender | None = None,
        interim: InterimVectors | None = None,
    ) -> None:
        self._settings = settings
        #: Where events on items the model does not know go (None: nowhere, as in unit
        #: tests), and the interim vectors every list is ranked with (streams.interim).
        self._contributions = contributions
        self._interim = interim
        #: The items taken down, read with every batch (None: no catalog, as in unit tests).
        self._takedown = takedown
        self._ownership = ownership
        self._kinds = event_types(settings)
        self._state = state
        self._dead_letters = dead_letters
        self._sink = sink
        self._metrics = metrics
        self._popularity = Popularity()
        self._lists = ListBuilder(
            settings.list_length,
            follower,
            self._popularity,
            state.confidences,
            shown_top=settings.online_top_k,
        )
        self._follower = follower
        self._online = OnlineMetrics(metrics)
        self._lock = asyncio.Lock()
        self._refresher = ListRefresher(
            settings,
            state,
            sink,
            follower,
            self._popularity,
            self._lock,
            self._rewrite,
            metrics,
            on_data_lost,
        )

    async def process(self, batch: Sequence[Message]) -> None:
        """Process one batch; returns only when its results are durable (see module doc)."""
        await self.write(await self.prepare(batch))

    async def prepare(
        self, batch: Sequence[Message], received_at: int | None = None
    ) -> PreparedBatch:
        """Steps 1 to 3 and the fold-in: returns once the batch's state changes are durable.

        ``received_at`` is :attr:`Ownership.revokes` when the batch arrived
        (:meth:`Ownership.fenced`)."""
        async with self._lock:
            await self._refresher.start()
            # The takedown set for this batch's lists: read here, since nothing may be
            # awaited between the ownership check below and the batch's sends.
            await self._read_takedown()
            await self._read_interim()
            self._metrics.batch_size.observe(len(batch))
            s = self._settings
            counting = self._refresher.counting_popularity
            recommender = self._follower.recommender
            interim = is_interim(recommender) if self._contributions is not None else None
            result = step(
                batch,
                self._state.get,
                self._kinds,
                s.history_length,
                s.dedupe_window,
                counting,
                s.fault_item_id,
                interim,
                None if recommender is None else recommender.version_id,
            )
            self._popularity.add(result.new_items)
            self._count(result)
            # No await between this check and the sends below: a revoke that
            # starts later finds the records on their way, written while owned.
            fenced = self._ownership.fenced({m.partition for m in batch}, received_at)
            if fenced:
                self._metrics.events_fenced.inc(sum(1 for m in batch if m.partition in fenced))
                log.info(
                    "partitions %s were revoked under a batch; left to their next owner",
                    sorted(fenced),
                )
            touched = {u: t for u, t in result.touched.items() if t.partition not in fenced}
            messages = self._contributions_of(result.interim, touched)
            sending = await self._start_contributions(messages)
            writes: dict[str, Write] = {
                user: (t.partition, t.state) for user, t in touched.items() if t.changed
            }
            letters = [d for d in result.dead_letters if d.partition not in fenced]
            keep = [(u, t.state) for u, t in touched.items() if t.state and not t.state.is_marker]
            forget = [u for u, t in touched.items() if t.state is None or t.state.is_marker]
            # built before the persist: each state records the top of its new list (online
            # metrics), and a state must not change once persisted (the cache keeps it)
            try:
                lists = self._build([u for u, _ in keep], [s for _, s in keep])
            except BaseException:
                if sending is not None:
                    sending.cancel()
                raise
            online = online_tally(
                (e for e in result.exposures if touched.get(e.user) is not None),
                self._follower.generation,
            )
            self._online.count(online)
            if sending is not None:
                # Acknowledged before the states are written: a crash in between
                # redelivers the events, which make the same entries again.
                await sending
                self._metrics.contributions_sent.inc(len(messages))
                late = self._ownership.fenced({m.partition for m in batch}, received_at) - fenced
                if late:  # revoked while the contributions were on their way
                    self._metrics.events_fenced.inc(sum(1 for m in batch if m.partition in late))
                    fenced = fenced | late
                    gone = {u for u, t in touched.items() if t.partition in late}
                    writes = {u: w for u, w in writes.items() if u not in gone}
                    letters = [d for d in letters if d.partition not in late]
                    lists = [x for x in lists if x.user not in gone]
                    forget = [u for u in forget if u not in gone]
            with self._metrics.durable_write_seconds.time():
                await asyncio.gather(self._state.persist(writes), self._dead_letters.send(letters))
            self._metrics.users_held.set(len(self._state))
            self._metrics.state_cache_users.set(self._state.cache_users)
            self._metrics.state_cache_bytes.set(self._state.cache_bytes)
        reasons = dict(count_by_reason(letters))
        return PreparedBatch(lists, forget, result.event_ts, fenced, online, reasons)

    async def prepare_isolating(
        self, batch: Sequence[Message], received_at: int | None = None
    ) -> PreparedBatch:
        """:meth:`prepare`, with a batch that fails for a reason no retry fixes split in two,
        down to the message that fails alone, which is dead-lettered with the error.

        A transient fault that outlasted its retries (:class:`TransientError`)
        is raised as it is: the process exits and a restart tries again. So is a
        :class:`~streams.topology.TopologyError` (a topic or partition missing):
        the events are valid, and splitting would dead-letter every one. Any
        other exception is permanent for some message of the batch (a bug, a
        record the broker refuses); left alone it would fail every restart the
        same way and stop every partition. Halves are prepared in order, and
        what a failed attempt already made durable is idempotent to redo.
        """
        try:
            return await self.prepare(batch, received_at)
        except (TransientError, TopologyError):
            raise
        except Exception as exc:
            if len(batch) == 1:
                return await self._dead_letter_alone(batch[0], exc, received_at)
            log.warning("batch of %d failed (%r); splitting it", len(batch), exc)
            self._metrics.batch_splits.inc()
            middle = len(batch) // 2
            first = await self.prepare_isolating(batch[:middle], received_at)
            second = await self.prepare_isolating(batch[middle:], received_at)
            return PreparedBatch(
                first.lists + second.lists,
                first.forget + second.forget,
                first.event_ts + second.event_ts,
                first.fenced | second.fenced,
                combine(first.online, second.online),
                dict(Counter(first.dead_letters) + Counter(second.dead_letters)),
            )

    async def _dead_letter_alone(
        self, msg: Message, exc: Exception, received_at: int | None
    ) -> PreparedBatch:
        log.error(
            "message %s[%d]@%d fails alone (%r); dead-lettering it",
            msg.topic,
            msg.partition,
            msg.offset,
            exc,
        )
        fenced = self._ownership.fenced([msg.partition], received_at)
        if fenced:
            return PreparedBatch([], [], [], fenced)
        letter = DeadLetter.of(
            msg.topic, msg.partition, msg.offset, msg.key, msg.value, failure_rejection(exc)
        )
        await self._dead_letters.send([letter])
        self._metrics.invalid.labels(msg.topic).inc()
        return PreparedBatch([], [], [], dead_letters=dict(count_by_reason([letter])))

    async def write(self, prepared: PreparedBatch) -> None:
        """Step 4's Redis write; returns when the lists are stored (or refused as older)."""
        await self._send(prepared.lists, prepared.forget, prepared.online, prepared.dead_letters)
        now_ms = time.time() * 1000
        event_ts = np.asarray(prepared.event_ts, dtype=np.float64)
        # One histogram update per bucket for the batch, not one per event.
        self._metrics.freshness_seconds.observe_many(np.maximum(0.0, now_ms - event_ts) / 1000)

    async def follow_model(self) -> None:
        """Called every ``model_poll_interval_s``: see :meth:`ListRefresher.follow_model`."""
        await self._refresher.follow_model()

    async def expire_forget_markers(self) -> int:
        """Turn forget markers older than ``forget_retention_s`` into tombstones.

        A marker drops a forgotten user's old events for as long as they may
        come back (a replay, a redelivery); past the retention, the record goes,
        and the compacted changelog forgets the user for good.
        """
        cutoff = int(time.time() * 1000 - self._settings.forget_retention_s * 1000)
        async with self._lock:
            expired = self._state.expired_markers(cutoff)
            fenced = self._ownership.fenced(p for p, _ in expired.values())
            writes = {u: w for u, w in expired.items() if w[0] not in fenced}
            await self._state.persist(writes)
        self._metrics.markers_expired.inc(len(writes))
        return len(writes)

    def _count(self, result: StepResult) -> None:
        """The batch's per-topic tallies, added to the metrics once per batch (a labelled
        counter costs microseconds per call, which adds up at 10k events/s)."""
        m, t = self._metrics, result.tallies
        for metric, tally in (
            (m.consumed, t.consumed),
            (m.valid, t.valid),
            (m.invalid, t.invalid),
            (m.duplicate, t.duplicate),
            (m.forgotten, t.forgotten),
        ):
            for topic, n in tally.items():
                metric.labels(topic).inc(n)

    def _build(self, users: Sequence[str], states: Sequence[UserState]) -> list[UserList]:
        """One batched fold-in for ``users``: their encoded lists."""
        started = time.perf_counter()
        lists = self._lists.build(users, states, int(time.time() * 1000))
        self._metrics.foldin_seconds.observe(time.perf_counter() - started)
        return lists

    async def _send(
        self,
        lists: Sequence[UserList],
        forget: Sequence[str] = (),
        online: Totals | None = None,
        dead_letters: dict[str, int] | None = None,
    ) -> None:
        """One Redis pipeline: compare-and-set every list, delete the lists of ``forget``,
        add the ``online`` counts and the ``dead_letters`` by reason."""
        started = time.perf_counter()
        written = await self._sink.write(lists, forget, online or {}, dead_letters or {})
        self._metrics.redis_write_seconds.observe(time.perf_counter() - started)
        self._metrics.lists_written.inc(written)
        self._metrics.lists_stale.inc(len(lists) - written)

    async def _rewrite(self, users: Sequence[str], states: Sequence[UserState]) -> None:
        """A refresh's chunk: build and write the lists of ``users``."""
        await self._read_takedown()
        await self._read_interim()
        await self._send(self._build(users, states))

    async def _start_contributions(
        self, messages: Sequence[ContributionMessage]
    ) -> asyncio.Future[None] | None:
        """The send of the batch's contribution messages, started: one yield lets the task
        produce its records, so their acknowledgements come back while the lists are built
        (the caller awaits it before the states are written). This is the one await between
        the ownership check and the sends: contributions sent for a partition revoked
        meanwhile are harmless (its next owner makes the same entries, the item agent counts
        them once), and the states are checked again after it."""
        if not messages or self._contributions is None:
            return None
        sending = asyncio.ensure_future(self._contributions.send(messages))
        await asyncio.sleep(0)
        return sending

    def _contributions_of(
        self, touches: Sequence[InterimTouch], touched: Mapping[str, Touched]
    ) -> list[ContributionMessage]:
        """The contribution messages of the batch's events on interim items (those of
        ``touched`` users only), with each user's state keeping its contributions."""
        recommender = self._follower.recommender
        kept = [t for t in touches if t.user in touched]
        if not kept or recommender is None:
            return []
        messages, held = contributions(kept, recommender)
        for user, contributed in held.items():
            state = touched[user].state
            if state is not None:
                state.interim = contributed
        return messages

    async def _read_interim(self) -> None:
        """The current version's interim vectors, for the lists built next (the same
        read-before-the-ownership-check rule as the takedown set's)."""
        if self._interim is None:
            return
        model = self._follower.recommender
        try:
            self._lists.interim = await self._interim.refresh(
                None if model is None else model.version_id
            )
        except (*TRANSIENT_ERRORS, TimeoutError) as exc:  # type: ignore[misc]
            log.warning("interim vectors not read (%r); the last ones stay", exc)

    async def _read_takedown(self) -> None:
        """The items taken down, for the lists built next: one small read at the start of
        each batch (or the last one, read less than the reader's ``max_age_s`` ago), so
        that no list is built against a takedown set older than that before its batch."""
        if self._takedown is not None:
            self._lists.unavailable = await self._takedown.read()
