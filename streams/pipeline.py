"""One micro-batch, start to finish: validate, dedupe, update history, fold in, write.

The order of the steps is the delivery guarantee (docs/worker.md has the
crash-by-crash account):

1. validate every message; an invalid one becomes a dead letter;
2. apply valid events to their users' states, dropping repeated ``event_id``\\ s;
3. make the new states and the dead letters durable in Kafka and wait for the
   broker's acknowledgement;
4. fold every touched user in with one batched call and write their lists to
   Redis in one pipeline (compare-and-set on the list's order token);
5. return; only then does the agent ack the batch, and only acked offsets are committed.

Steps 1 to 4's fold-in are :meth:`BatchProcessor.prepare`, under the lock; the
Redis write is :meth:`BatchProcessor.write`, outside it, so that the next
batch can be prepared while this one's pipeline is on the wire. Writes are
issued in batch order by the agent, and each is a compare-and-set anyway.

A user is "touched" by a duplicate too, and gets their list rewritten from
the state: after a crash between steps 3 and 4 the redelivered events are all
duplicates, and this rewrite is what puts the missing list into Redis.

Model refreshes take the same lock as batches, so a refresh never writes a
list computed from a state that a batch is changing.

Redis may lose every list at once (a restart without persistence, a flush).
At start and at every model poll the worker reads the epoch token that names
Redis's data (``P epoch`` in :mod:`schemas.recs`); a token it did not see
before means that what it wrote is gone, and the same refresh as after a model
switch writes every held list again (and the popular list, when a model
exists). One token per Redis rather than a look at the shared ``popular`` key:
the first worker to notice would rewrite that key and hide the loss from the
other workers, whose users' lists are gone all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from freshrec.settings import Settings
from models.weighting import Interaction
from schemas.events import ForgetEvent
from schemas.recs import RecItem, RecList, order_model_version
from schemas.state import UserState
from schemas.validator import Rejection, validate
from streams.dead_letter import DeadLetter, DeadLetterWriter
from streams.lists import ListBuilder, UserList
from streams.metrics import WorkerMetrics
from streams.model_follower import Candidate, ModelFollower
from streams.popularity import Popularity
from streams.sink import RedisSink
from streams.state import StateTable, Write

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A consumed message, as the pipeline needs it (decoupled from Faust's event type)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch whose states are durable and whose lists are built; left: the Redis write."""

    lists: list[UserList]
    forget: list[str]
    event_ts: list[int]
    """Timestamps of the batch's new events, for the freshness metric."""


@dataclass(slots=True)
class _Touched:
    """What a batch did to one user."""

    state: UserState | None
    partition: int
    changed: bool = False
    event_ts: list[int] = field(default_factory=list)


def _key_rejection(key: bytes | None) -> Rejection:
    shown = "no key" if key is None else repr(key[:40])
    return Rejection(
        "key",
        "partitioning",
        "message key must be the event's user_id, so that all of a "
        "user's events reach the same partition",
        shown,
    )


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
    ) -> None:
        self._settings = settings
        self._kinds = {
            settings.topic_watch: "watch",
            settings.topic_rate: "rate",
            settings.topic_forget: "forget",
        }
        self._state = state
        self._dead_letters = dead_letters
        self._sink = sink
        self._follower = follower
        self._metrics = metrics
        self._popularity = Popularity()
        self._lists = ListBuilder(settings.list_length, follower, self._popularity)
        self._lock = asyncio.Lock()
        self._started = False
        #: Refreshes asked for so far, and how many of them the last completed
        #: refresh covered: one asked for while a refresh runs is run again by
        #: the next poll.
        self._refresh_requests = 0
        self._refreshes_done = 0
        #: The epoch token of Redis's data when this worker last looked.
        self._epoch: str | None = None

    async def process(self, batch: Sequence[Inbound]) -> None:
        """Process one batch; returns only when its results are durable (see module doc)."""
        await self.write(await self.prepare(batch))

    async def prepare(self, batch: Sequence[Inbound]) -> PreparedBatch:
        """Steps 1 to 3 and the fold-in: returns once the batch's state changes are durable."""
        async with self._lock:
            if not self._started:
                await self._start()
            self._metrics.batch_size.observe(len(batch))
            touched, letters = self._apply(batch)
            writes: dict[str, Write] = {
                user: (t.partition, t.state) for user, t in touched.items() if t.changed
            }
            with self._metrics.durable_write_seconds.time():
                await asyncio.gather(self._state.persist(writes), self._dead_letters.send(letters))
            keep = [(u, t.state) for u, t in touched.items() if t.state is not None]
            forget = [u for u, t in touched.items() if t.state is None]
            lists = self._build([u for u, _ in keep], [s for _, s in keep if s is not None])
            self._metrics.users_held.set(len(self._state))
        return PreparedBatch(lists, forget, [ts for t in touched.values() for ts in t.event_ts])

    async def write(self, prepared: PreparedBatch) -> None:
        """Step 4's Redis write; returns when the lists are stored (or refused as older)."""
        await self._send(prepared.lists, prepared.forget)
        now_ms = time.time() * 1000
        observe = self._metrics.freshness_seconds.observe
        for ts in prepared.event_ts:
            observe(max(0.0, now_ms - ts) / 1000)

    def _apply(self, batch: Sequence[Inbound]) -> tuple[dict[str, _Touched], list[DeadLetter]]:
        """Steps 1 and 2: validate and update states in memory (nothing is written yet)."""
        s = self._settings
        counting = self._follower.recommender is None
        touched: dict[str, _Touched] = {}
        letters: list[DeadLetter] = []
        # per-topic tallies, added to the metrics once per batch (a labelled
        # counter costs microseconds per call, which adds up at 10k events/s)
        consumed: Counter[str] = Counter()
        valid: Counter[str] = Counter()
        invalid: Counter[str] = Counter()
        duplicate: Counter[str] = Counter()
        for msg in batch:
            consumed[msg.topic] += 1
            result = validate(msg.value, self._kinds.get(msg.topic))
            if not isinstance(result, Rejection) and msg.key != result.user_id.encode():
                result = _key_rejection(msg.key)
            if isinstance(result, Rejection):
                invalid[msg.topic] += 1
                letters.append(
                    DeadLetter.of(msg.topic, msg.partition, msg.offset, msg.key, msg.value, result)
                )
                continue
            user = result.user_id
            t = touched.get(user)
            if t is None:
                t = touched[user] = _Touched(self._state.get(user), msg.partition)
            t.partition = msg.partition
            if isinstance(result, ForgetEvent):
                t.state, t.changed = None, True
                t.event_ts.clear()
                valid[msg.topic] += 1
                continue
            if t.state is None:
                t.state = UserState()
            is_new = counting and all(i.item_id != result.item_id for i in t.state.history)
            if t.state.apply(result, s.history_length, s.dedupe_window):
                t.changed = True
                t.event_ts.append(result.ts)
                valid[msg.topic] += 1
                if is_new:
                    self._popularity.add([result.item_id])
            else:
                duplicate[msg.topic] += 1
        m = self._metrics
        for metric, tally in (
            (m.consumed, consumed),
            (m.valid, valid),
            (m.invalid, invalid),
            (m.duplicate, duplicate),
        ):
            for topic, n in tally.items():
                metric.labels(topic).inc(n)
        return touched, letters

    def _build(self, users: Sequence[str], states: Sequence[UserState]) -> list[UserList]:
        """One batched fold-in for ``users``: their encoded lists."""
        started = time.perf_counter()
        lists = self._lists.build(users, states, int(time.time() * 1000))
        self._metrics.foldin_seconds.observe(time.perf_counter() - started)
        return lists

    async def _send(self, lists: Sequence[UserList], forget: Sequence[str] = ()) -> None:
        """One Redis pipeline: compare-and-set every list, delete the lists of ``forget``."""
        started = time.perf_counter()
        written = await self._sink.write(lists, forget)
        self._metrics.redis_write_seconds.observe(time.perf_counter() - started)
        self._metrics.lists_written.inc(written)
        self._metrics.lists_stale.inc(len(lists) - written)

    async def _start(self) -> None:
        """First batch after start or recovery: note Redis's epoch, pick up the model,
        count popularity.

        The epoch is read before this worker writes anything, so that a loss
        after any of its writes shows as a token it did not see before.
        """
        lost = await self._redis_lost_data()
        await self._adopt(await self._follower.fetch())
        if self._follower.recommender is None:
            self._popularity.rebuild(self._histories())
        if lost:
            self._schedule_refresh()
        self._started = True

    def _histories(self) -> Iterator[list[Interaction]]:
        for user in self._state.users():
            state = self._state.get(user)
            if state is not None:
                yield state.history

    async def follow_model(self) -> None:
        """Called every ``model_poll_interval_s``: switch versions, notice a Redis that
        lost its data, and after either, refresh every held list."""
        # loading a version takes long for a large model: batches keep flowing meanwhile
        candidate = await self._follower.fetch()
        async with self._lock:
            lost = await self._redis_lost_data()
            adopted = await self._adopt(candidate)
            if self._follower.recommender is None:
                self._popularity.rebuild(self._histories())
            elif lost and not adopted:
                await self._write_popular()
            if lost:
                self._schedule_refresh()
            # also when no event comes: a restarted worker holds its recovered users
            self._metrics.users_held.set(len(self._state))
        if self._refresh_requests != self._refreshes_done:
            await self._refresh_all()

    async def _redis_lost_data(self) -> bool:
        """Whether Redis may lack lists this worker holds: its epoch token is new (one round trip).

        At this worker's first look, a token this call had to store means a
        new or emptied Redis: lists written before this worker started may be
        gone too (a refresh of a new Redis costs little). Later, any token other
        than the last one seen means Redis lost its data since.
        """
        epoch, stored = await self._sink.epoch()
        previous, self._epoch = self._epoch, epoch
        if previous is None:
            if stored:
                log.info("Redis had no epoch (new or emptied); writing every held list")
            return stored
        if epoch == previous:
            return False
        self._metrics.redis_data_lost.inc()
        log.warning(
            "Redis lost its data (epoch %s, was %s); writing every held list again, "
            "and the popular list once a model exists",
            epoch,
            previous,
        )
        return True

    async def _adopt(self, candidate: Candidate | None) -> bool:
        """Switch to a fetched version, if any: popular list, then a refresh of every list."""
        if not self._follower.adopt(candidate):
            return False
        await self._write_popular()
        self._schedule_refresh()
        return True

    async def _write_popular(self) -> None:
        """The current model's popular list, to the shared ``popular`` key."""
        recommender = self._follower.recommender
        assert recommender is not None
        items, scores = recommender.popular(self._settings.list_length)
        popular = RecList(
            None,
            "popular",
            recommender.version_id,
            0,
            int(time.time() * 1000),
            tuple(RecItem(item, score) for item, score in zip(items, scores, strict=True)),
        )
        await self._sink.write_popular(popular)

    def _schedule_refresh(self) -> None:
        """Have the next :meth:`follow_model` rewrite every held list Redis does not
        hold with the current model."""
        self._refresh_requests += 1

    async def _refresh_all(self) -> None:
        """Rewrite every held user's list that Redis does not hold with the current model,
        a batch at a time.

        Each chunk takes the lock, so events keep flowing between chunks. The
        stored lists' ``order`` tokens, read in one pipeline per chunk, name
        the model each was made with: lists a batch already wrote with this
        model are skipped, and so is everything after a restart that found the
        model unchanged, while a Redis that lost its data has no token and
        gets every list again.
        """
        requests = self._refresh_requests
        version = self._follower.version
        users = list(self._state.users())
        size = self._settings.batch_size
        refreshed = 0
        for start in range(0, len(users), size):
            async with self._lock:
                held = [
                    (user, state)
                    for user in users[start : start + size]
                    if (state := self._state.get(user)) is not None
                ]
                stored = await self._sink.stored_orders([user for user, _ in held])
                chunk = [
                    pair
                    for pair, order in zip(held, stored, strict=True)
                    if order is None or order_model_version(order) != version
                ]
                lists = self._build([u for u, _ in chunk], [s for _, s in chunk])
                await self._send(lists)
                refreshed += len(chunk)
        self._refreshes_done = requests
        log.info("refreshed %d list(s) with model %s", refreshed, version)
