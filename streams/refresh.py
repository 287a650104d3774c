"""Keeping every held list current: with the model in use, and with what Redis still holds.

:class:`ListRefresher` owns the worker's current model (through its
:class:`~streams.model_follower.ModelFollower`) and what depends on it outside
a batch:

- at the first batch, and at every model poll, it picks up a new model
  version, writes that model's popular list, and has every held list written
  again with it;
- it notices a Redis that lost its data (below), and has the lists written again;
- before any model exists, it (re)counts the held users' popularity, which is
  what their lists are made of.

Redis may lose every list at once (a restart without persistence, a flush).
At start and at every model poll the worker reads the epoch token that names
Redis's data (``P epoch`` in :mod:`schemas.recs`); a token it did not see
before means that what it wrote is gone, and the same refresh as after a model
switch writes every held list again (and the popular list, when a model
exists). One token per Redis rather than a look at the shared ``popular`` key:
the first worker to notice would rewrite that key and hide the loss from the
other workers, whose users' lists are gone all the same.

Refreshes take the batches' lock, a chunk of ``refresh_chunk_size`` users
at a time, so a refresh never writes a list computed from a state that a
batch is changing, and events keep flowing between chunks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from freshrec.settings import Settings
from models.sequential import look_at_canary
from schemas.recs import RecItem, RecList, order_generation
from schemas.state import Interaction, UserState
from streams.metrics import WorkerMetrics
from streams.model_follower import Candidate, ModelFollower
from streams.popularity import Popularity
from streams.sink import RedisSink
from streams.state import StateTable

log = logging.getLogger(__name__)

#: Builds and writes the lists of users (same order as their states), under the lock.
Rewrite = Callable[[Sequence[str], Sequence[UserState]], Awaitable[None]]


class ListRefresher:
    """Follows the model and Redis's epoch for the partitions this worker holds."""

    def __init__(
        self,
        settings: Settings,
        state: StateTable,
        sink: RedisSink,
        follower: ModelFollower,
        popularity: Popularity,
        lock: asyncio.Lock,
        rewrite: Rewrite,
        metrics: WorkerMetrics,
        on_data_lost: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        #: Told when Redis is found to have lost its data (the worker rebuilds the item
        #: table from the items topic then: streams.catalog).
        self._on_data_lost = on_data_lost
        self._state = state
        self._sink = sink
        self._follower = follower
        self._popularity = popularity
        self._lock = lock
        self._rewrite = rewrite
        self._metrics = metrics
        self._started = False
        #: Refreshes asked for so far, and how many of them the last completed
        #: refresh covered: one asked for while a refresh runs is run again by
        #: the next poll.
        self._refresh_requests = 0
        self._refreshes_done = 0
        #: The epoch token of Redis's data when this worker last looked.
        self._epoch: str | None = None

    @property
    def counting_popularity(self) -> bool:
        """Whether lists come from the held users' popularity (no model yet)."""
        return self._follower.recommender is None

    async def start(self) -> None:
        """Before the first batch after start or recovery (under the lock): note Redis's
        epoch, pick up the model, count popularity. Does nothing after the first call.

        The epoch is read before this worker writes anything, so that a loss
        after any of its writes shows as a token it did not see before.
        """
        if self._started:
            return
        lost = await self._redis_lost_data()
        await self._adopt(await self._follower.fetch())
        if self._follower.recommender is None:
            self._popularity.rebuild(self._histories())
        if lost:
            self._schedule_refresh()
            self._data_lost()
        self._started = True

    def _histories(self) -> Iterator[list[Interaction]]:
        for user in self._state.users():
            state = self._state.get(user)
            if state is not None and not state.is_marker:
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
                self._data_lost()
            # also when no event comes: a restarted worker holds its recovered users
            self._metrics.users_held.set(len(self._state))
        if self._refresh_requests != self._refreshes_done:
            await self._refresh_all()
        await self._judge_canary()

    async def _judge_canary(self) -> None:
        """Look at the canary's sequential test (every worker's counts in Redis), export
        it, and abort a candidate found significantly worse when the settings say so."""
        canary, current = self._follower.canary, self._follower.recommender
        self._metrics.canary_fraction.set(self._follower.fraction if canary else 0.0)
        if canary is None or current is None:
            self._metrics.canary_worse.set(0)
            return
        a, b = await self._sink.online_counts(
            [(current.version_id, "current"), (canary.version_id, "canary")]
        )
        s = self._settings
        state = look_at_canary(a, b, s)
        self._metrics.canary_difference.set(state.difference)
        worse = state.decision == "candidate worse"
        self._metrics.canary_worse.set(1 if worse else 0)
        if worse and s.canary_auto_abort:
            reason = (
                f"hit rate @10 {b.hits10}/{b.events} against {a.hits10}/{a.events}, "
                f"p {state.p_value:.2g} < {s.canary_alpha}"
            )
            if await self._follower.abort_canary(reason):
                self._metrics.canary_aborts.inc()

    def _data_lost(self) -> None:
        if self._on_data_lost is not None:
            self._on_data_lost()

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
        """The current model's item table and popular list, to Redis (see ``P items`` in
        :mod:`schemas.recs`): when a model is adopted and after Redis lost its data,
        before any list made with the model."""
        recommender = self._follower.recommender
        assert recommender is not None
        await self._sink.write_items(recommender.version_id, recommender.item_ids.ids)
        canary = self._follower.canary
        if canary is not None:  # the canary's lists index into its own table
            await self._sink.write_items(canary.version_id, canary.item_ids.ids)
        items, scores = recommender.popular(self._settings.list_length)
        popular = RecList(
            None,
            "popular",
            recommender.version_id,
            0,
            int(time.time() * 1000),
            tuple(RecItem(item, score) for item, score in zip(items, scores, strict=True)),
            self._follower.generation,
        )
        await self._sink.write_popular(popular)

    def _schedule_refresh(self) -> None:
        """Have the next :meth:`follow_model` rewrite every held list Redis does not
        hold with the current model."""
        self._refresh_requests += 1

    async def _refresh_all(self) -> None:
        """Rewrite every held user's list that Redis does not hold with the current model,
        a chunk at a time.

        Each chunk takes the lock, so events keep flowing between chunks. The
        stored lists' ``order`` tokens, read in one pipeline per chunk, name
        the model each was made with: lists a batch already wrote with this
        model are skipped, and so is everything after a restart that found the
        model unchanged, while a Redis that lost its data has no token and
        gets every list again. "This model" is the pointer's generation, not
        the version id: after a rollback to a version some lists were once made
        with, those lists are written again all the same (the regression of
        issue 24, where a rollback left every idle user on the rolled-back
        version).
        """
        requests = self._refresh_requests
        version = self._follower.version
        generation = self._follower.generation
        users = list(self._state.users())
        size = self._settings.refresh_chunk_size
        refreshed = 0
        for start in range(0, len(users), size):
            async with self._lock:
                held = [
                    (user, state)
                    for user in users[start : start + size]
                    if (state := self._state.get(user)) is not None and not state.is_marker
                ]
                stored = await self._sink.stored_orders([user for user, _ in held])
                chunk = [
                    pair
                    for pair, order in zip(held, stored, strict=True)
                    if order is None or order_generation(order) != generation
                ]
                await self._rewrite([u for u, _ in chunk], [s for _, s in chunk])
                refreshed += len(chunk)
        self._refreshes_done = requests
        log.info(
            "refreshed %d list(s) with model %s (generation %d)", refreshed, version, generation
        )
