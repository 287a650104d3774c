"""The Faust app of the streaming worker, built from :class:`~freshrec.settings.Settings`.

``freshrec worker`` runs it; so does ``faust -A streams.app worker``, which
reads the module attribute ``app`` (built on first access from the
``FRESHREC_*`` environment). One agent consumes the ``watch``, ``rate`` and
``forget`` topics as one stream (they are keyed by user id and co-partitioned,
so one user's events all reach the same worker) in micro-batches of
``batch_size`` messages or ``batch_max_wait_s`` seconds, whichever comes first.

The agent reads batches with ``Stream.noack_take``, which acks nothing: each
batch's events are acked by the agent once the batch's lists are in Redis, and
only acked offsets get committed. (``take_events`` acks a batch when the agent
asks for the next one, and also when the agent leaves the loop by raising,
which would forbid working on one batch while the next one fills.) Batches run
in tasks, one prepared at a time and written in order (see ``fold_in``). An
exception must never go unhandled: transient faults are retried inside
(bounded by ``retry_deadline_s``), and anything that still escapes ends the
process at once with :data:`EXIT_UNPROCESSED`, before its batch is acked, so
that a restart resumes from the last commit and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import faust
from faust.types import TP
from threadpoolctl import threadpool_limits

from freshrec.kafka_config import faust_credentials
from freshrec.redis_client import redis_client
from freshrec.retry import RetryPolicy
from freshrec.settings import Settings
from schemas.interim import STATS_TABLE
from schemas.state import STATE_TABLE
from schemas.wire import topics_by_type
from streams.batch import Message
from streams.catalog import TAKEDOWN_MAX_AGE_S, CatalogWriter, TakedownReader
from streams.content_start import ContentStart
from streams.dead_letter import DeadLetterWriter
from streams.delivery import WorkerProducer
from streams.interim import INTERIM_MAX_AGE_S, ContributionSender, InterimVectors
from streams.item_stats import ItemAgent
from streams.liveness import LEDGER_NAME, ProgressWatch
from streams.metrics import WorkerMetrics
from streams.model_follower import ModelFollower
from streams.ownership import Ownership
from streams.pipeline import BatchProcessor
from streams.sink import RedisSink
from streams.state import StateTable
from streams.topology import TopologyError, check_topics
from streams.transport import transport_class

log = logging.getLogger(__name__)

#: Exit status when a batch could not be completed (EX_TEMPFAIL: restart and retry).
EXIT_UNPROCESSED = 75
#: Exit status when the worker refuses to run (its topics disagree with its settings):
#: the command's "failed for the reason it prints".
EXIT_REFUSED = 1

#: Forget markers past their retention are looked for this many times per
#: retention, so a marker outlives it by at most that share of it ...
MARKER_CHECKS_PER_RETENTION = 10
#: ... but at most once a second (a test's retention of seconds) and at least once
#: an hour (the default week's tenth would leave a marker up to 17 hours over).
MARKER_CHECK_MIN_S, MARKER_CHECK_MAX_S = 1.0, 3600.0
#: The progress watch checks at least this many times per ``stall_timeout_s``, so
#: that a stall is noticed within a quarter of the timeout past it ...
PROGRESS_CHECKS_PER_STALL = 4
#: ... and at least once a second (docs/worker.md, "Stalls"): a lost log is
#: declared at two checks in a row.
PROGRESS_CHECK_MAX_S = 1.0


def _die(reason: str) -> None:
    """End the process without acking the batch in hand (see module doc)."""
    log.critical("%s; exiting without committing, a restart resumes from the last commit", reason)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_UNPROCESSED)


def _refuse(reason: str) -> None:
    """End the process, in one line, when running on would be wrong (see :data:`EXIT_REFUSED`)."""
    log.critical("refusing to run: %s", reason)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(EXIT_REFUSED)


async def verify_topics(settings: Settings) -> None:
    """Refuse (:func:`_refuse`) when the worker's topics disagree with the settings
    (:mod:`streams.topology`); a broker that does not answer within its connect
    timeout is left to the progress watch."""
    try:
        await asyncio.wait_for(
            asyncio.to_thread(check_topics, settings), settings.topic_admin_timeout_s
        )
    except TopologyError as exc:
        _refuse(str(exc))
    except Exception as exc:  # a silent broker: no verdict
        log.warning("topic partition counts not checked (%r)", exc)


def faust_app(
    settings: Settings,
    app_id: str | None = None,
    on_revoking: Callable[[set[TP]], None] | None = None,
    stop_wait_s: float | None = None,
) -> faust.App:
    """A Faust app with the worker's broker, consumer and producer settings, and no agents.

    The worker is built on it, and so is the benchmark's baseline (a bare agent
    that only counts), so that both read the stream the same way.
    ``on_revoking`` is called as each revoke starts, and a stop waits at most
    ``stop_wait_s`` for the batches in flight (``streams.transport``).
    """
    app = faust.App(
        app_id or settings.app_id,
        broker=[f"kafka://{s.strip()}" for s in settings.bootstrap_servers.split(",")],
        store="memory://",
        datadir=settings.data_dir,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        broker_commit_interval=settings.broker_commit_interval_s,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        consumer_auto_offset_reset="earliest",
        # No standby copies of other workers' states: the memory store keeps no
        # offsets, so a takeover reads the changelog from its start anyway, and a
        # standby's keys would make this worker refresh (and count) their users too.
        table_standby_replicas=0,
        producer_acks=-1,
        broker_credentials=faust_credentials(settings),
        web_port=settings.worker_web_port,
        web_bind=settings.worker_web_host,
        web_in_thread=False,
    )
    # Before anything touches app.transport (declaring a topic does). A fetch
    # never waits on the broker longer than a batch waits to fill.
    transport = transport_class(settings.batch_max_wait_s, on_revoking, stop_wait_s)
    app.transport = transport(app.conf.broker_consumer, app)
    return app


def create_app(settings: Settings) -> faust.App:
    """The worker app: agent, model-poll timer and ``/metrics`` page, wired to ``settings``.

    BLAS is limited to one thread in this process: a worker is one process per
    core, and a BLAS pool competing with Faust's consumer thread, the event
    loop and the broker made a batch's (170 x 64) @ (64 x 2,000) score product
    three times slower than on one thread (threadpoolctl comes with implicit).
    """
    threadpool_limits(limits=1, user_api="blas")
    metrics = WorkerMetrics()
    event_topics = tuple(topics_by_type(settings).values())
    ownership = Ownership(event_topics)
    #: The contributions partitions held, for the item agent's fencing (streams.item_stats).
    item_ownership = Ownership((settings.topic_contributions,))

    def revoking(revoked: set[TP]) -> None:
        ownership.revoking((tp.topic, tp.partition) for tp in revoked)
        item_ownership.revoking((tp.topic, tp.partition) for tp in revoked)
        metrics.partitions_held.set(ownership.held)

    app = faust_app(settings, on_revoking=revoking, stop_wait_s=settings.worker_stop_wait_s)

    def retry(operation: str) -> RetryPolicy:
        counter = metrics.retries.labels(operation)

        def on_retry(error: BaseException, failures: int, delay: float) -> None:
            counter.inc()
            log.warning("%s failed (%s); retry %d in %.2fs", operation, error, failures, delay)

        return RetryPolicy.from_settings(settings, on_retry=on_retry)

    # bytes types make Faust use the raw codec for the changelog both ways
    # (writing and recovering): the record format is streams.state's, not Faust's.
    table = app.Table(
        STATE_TABLE, partitions=settings.topic_partitions, key_type=bytes, value_type=bytes
    )
    source = app.topic(*event_topics, key_serializer="raw", value_serializer="raw")
    # The item agent's statistics, co-partitioned with the contributions topic.
    stats_table = app.Table(
        STATS_TABLE, partitions=settings.topic_partitions, key_type=bytes, value_type=bytes
    )
    contributions_source = app.topic(
        settings.topic_contributions, key_serializer="raw", value_serializer="raw"
    )

    def committed(key: tuple[str, int]) -> int | None:
        offset: int | None = app.consumer._committed_offset.get(TP(*key))  # type: ignore[attr-defined]  # Faust's, set at each seek
        return offset

    async def rewind(partitions: list[tuple[str, int]]) -> None:
        consumer = app.consumer
        for key in partitions:
            tp = TP(*key)
            consumer._committed_offset[tp] = None  # type: ignore[attr-defined]  # Faust's
            await consumer.seek(tp, 0)

    watch = ProgressWatch(
        settings,
        event_topics,
        metrics,
        committed=committed,
        ledger=Path(settings.data_dir) / LEDGER_NAME,
        rewind=rewind,
    )
    # Changelog records and dead letters go through confluent-kafka, not Faust's
    # producer (streams.delivery says why); closed, in-flight records flushed, at shutdown.
    producer = WorkerProducer(settings)

    @app.task
    async def start_producer() -> None:
        producer.start()

    @app.on_before_shutdown.connect
    async def close_producer(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # The consumer stopped waiting for these (streams.transport, "A bounded stop"):
        # nothing of theirs was acked, and nothing of theirs may be written from now on.
        for task in in_flight:
            task.cancel()
        await producer.close()

    dead_letters = DeadLetterWriter(
        producer, settings.topic_dead_letter, retry("dead-letter write")
    )
    catalog_client = redis_client(settings, "freshrec-worker-catalog")
    follower = ModelFollower(settings.model_store, metrics)
    interim = InterimVectors(settings, catalog_client, INTERIM_MAX_AGE_S)
    content = ContentStart(
        settings, catalog_client, follower, metrics, retry("content vector write"), interim
    )
    catalog = CatalogWriter(
        settings, catalog_client, dead_letters, retry("catalog write"), metrics, content
    )
    rebuilds: set[asyncio.Task[None]] = set()

    def rebuild_catalog() -> None:
        """Redis lost its data: the item table back from the items topic, in the background."""

        async def rebuild() -> None:
            try:
                await catalog.rebuild(settings)
            except Exception:
                log.exception("rebuilding the item table failed; it refills as records come")

        task = asyncio.ensure_future(rebuild())
        rebuilds.add(task)
        task.add_done_callback(rebuilds.discard)

    processor = BatchProcessor(
        settings,
        StateTable(table, producer, retry("changelog write"), settings.state_cache_users),
        dead_letters,
        RedisSink(settings, retry("redis write")),
        follower,
        metrics,
        ownership,
        TakedownReader(settings, catalog_client, TAKEDOWN_MAX_AGE_S),
        rebuild_catalog,
        ContributionSender(settings, producer, retry("contributions write")),
        interim,
    )
    item_agent = ItemAgent(
        settings,
        stats_table,
        producer,
        catalog_client,
        follower,
        metrics,
        item_ownership,
        retry("item statistics write"),
        content,
    )
    items_source = app.topic(settings.topic_items, key_serializer="raw", value_serializer="raw")

    #: Batches in flight, cancelled as the worker stops (after its bounded wait for them).
    in_flight: set[asyncio.Task[None]] = set()

    async def complete(
        events: list[Any],
        received_at: int,
        prepared: asyncio.Event,
        previous: asyncio.Task[None] | None,
    ) -> None:
        """Process one batch, then ack its events: only now may their offsets be committed.

        ``received_at`` is the revoke count when the batch arrived: a batch that
        a rebalance overtook is fenced whole (:mod:`streams.ownership`).

        The batch's Redis write and acks wait for the previous batch's, so
        writes reach Redis, and offsets are acked, in batch order.
        """
        # Faust's messages are what the batch step reads (streams.batch.Message): the
        # batch is read as it came, with no copy per event.
        messages = [e.message for e in events]
        batch: list[Message] = messages
        try:
            ready = await processor.prepare_isolating(batch, received_at)
            prepared.set()
            if previous is not None:
                await previous
            await processor.write(ready)
        except Exception as exc:
            log.exception("batch of %d failed", len(batch))
            if isinstance(exc, TopologyError):
                # A topic or partition the batch writes to does not exist: no retry helps.
                # Refuse in one line if the topics disagree with the settings (a restart
                # would refuse too); otherwise a restart creates what is missing.
                await verify_topics(settings)
            _die(f"batch failed: {exc!r}")
        if ready.fenced:
            # Not acked: the partitions' next owner processes them.
            forget = app.consumer.forget  # type: ignore[attr-defined]  # streams.transport's
            forget(m for m in messages if m.partition in ready.fenced)
            messages = [m for m in messages if m.partition not in ready.fenced]
        # The whole batch in one step (streams.transport): each processed offset is acked.
        ack_processed = app.consumer.ack_processed  # type: ignore[attr-defined]
        watch.processed(ack_processed(messages))
        watch.batch_done()

    @app.agent(source, name="fold-in")
    async def fold_in(stream: Any) -> None:
        # noack_take acks nothing itself (take_events acks a batch when the
        # agent asks for the next one), so batches are processed in tasks while
        # the next one fills: Faust reads the stream, and the next batch is
        # prepared, while this one's lists are on their way to Redis. A new
        # batch starts once the last one is prepared and the one before it
        # written: at most two batches are in flight, one being written and one
        # being prepared, even while Redis is down.
        #
        # What Faust takes while those hold the next batch back joins it, up to
        # batch_size: a take's window runs from the agent's request, not from a
        # batch's first event, and under load the events Faust moved into its
        # buffer within that window were a dozen, not a batch (issue 27: batches
        # of 16 events over a backlog, each paying a whole batch's fixed costs).
        before_last: asyncio.Task[None] | None = None
        last: asyncio.Task[None] | None = None
        prepared: asyncio.Event | None = None
        #: Events taken and not yet in a batch, and the revoke count at the first of them.
        gathered: list[Any] = []
        received_at = 0

        def held_back() -> bool:
            return (prepared is not None and not prepared.is_set()) or (
                before_last is not None and not before_last.done()
            )

        def start_gathered() -> None:
            """Start a batch of what was gathered, unless the batches in flight hold it back."""
            nonlocal before_last, last, prepared
            if not gathered or held_back():
                return
            batch = gathered[: settings.batch_size]
            del gathered[: settings.batch_size]
            watch.batch_started()
            prepared = asyncio.Event()
            task = asyncio.create_task(complete(batch, received_at, prepared, last))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            before_last, last = last, task
            # A stream gone quiet still gets what was gathered meanwhile started.
            waker = asyncio.create_task(start_when_free(prepared, before_last))
            in_flight.add(waker)
            waker.add_done_callback(in_flight.discard)

        async def start_when_free(ready: asyncio.Event, written: asyncio.Task[None] | None) -> None:
            await ready.wait()
            if written is not None:
                await asyncio.wait((written,))
            start_gathered()

        async for events in stream.noack_take(settings.batch_size, settings.batch_max_wait_s):
            if not gathered:
                received_at = ownership.revokes
            watch.received((e.message.topic, e.message.partition, e.message.offset) for e in events)
            gathered.extend(events)
            start_gathered()
            while len(gathered) >= settings.batch_size:  # a full batch waits its turn here
                if prepared is not None:
                    await prepared.wait()
                if before_last is not None:
                    await before_last
                start_gathered()

    @app.agent(items_source, name="catalog")
    async def fold_catalog(stream: Any) -> None:
        # Item records into the Redis item table (streams.catalog), a batch at a time,
        # acked once its records are in Redis and its dead letters acknowledged.
        async for events in stream.noack_take(settings.batch_size, settings.batch_max_wait_s):
            messages = [e.message for e in events]
            try:
                await catalog.process(messages)
            except Exception as exc:
                log.exception("catalog batch of %d failed", len(messages))
                _die(f"catalog batch failed: {exc!r}")
            app.consumer.ack_processed(messages)  # type: ignore[attr-defined]

    @app.agent(contributions_source, name="item-fold-in")
    async def fold_items(stream: Any) -> None:
        # Contributions to items the model does not know (streams.item_stats), a batch
        # at a time, acked once their statistics are in the changelog.
        async for events in stream.noack_take(settings.batch_size, settings.batch_max_wait_s):
            received_at = item_ownership.revokes
            messages = [e.message for e in events]
            try:
                fenced = await item_agent.process(messages, received_at)
            except Exception as exc:
                log.exception("contributions batch of %d failed", len(messages))
                _die(f"contributions batch failed: {exc!r}")
            if fenced:  # not acked: the partitions' next owner processes them
                forget = app.consumer.forget  # type: ignore[attr-defined]  # streams.transport's
                forget(m for m in messages if m.partition in fenced)
                messages = [m for m in messages if m.partition not in fenced]
            app.consumer.ack_processed(messages)  # type: ignore[attr-defined]

    @app.timer(settings.model_poll_interval_s, name="follow-model")
    async def follow_model() -> None:
        try:
            await processor.follow_model()
        except Exception:
            # Only lists are written here (no offsets): the next tick tries again.
            log.exception("model check or refresh failed; retrying at the next poll")
        try:
            await content.follow()  # a new version: its content vectors (content_start)
        except Exception:
            log.exception("content vectors not built; retrying at the next poll")

    marker_check_s = settings.forget_retention_s / MARKER_CHECKS_PER_RETENTION
    marker_check_s = max(MARKER_CHECK_MIN_S, min(MARKER_CHECK_MAX_S, marker_check_s))

    @app.timer(marker_check_s, name="expire-markers")
    async def expire_markers() -> None:
        try:
            expired = await processor.expire_forget_markers()
        except Exception:
            log.exception("expiring forget markers failed; retrying at the next tick")
            return
        if expired:
            log.info("%d forget marker(s) past their retention became tombstones", expired)

    progress_check_s = min(
        PROGRESS_CHECK_MAX_S, settings.stall_timeout_s / PROGRESS_CHECKS_PER_STALL
    )

    @app.timer(progress_check_s, name="watch-progress")
    async def watch_progress() -> None:
        assigned = [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
        verdict = await watch.check(assigned)
        if verdict.stalled is not None:
            _die(f"worker stuck: {verdict.stalled}")

    @app.on_partitions_revoked.connect
    def forget_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        revoked = kwargs.get("revoked", args[0] if args else ())
        watch.revoked((tp.topic, tp.partition) for tp in revoked)

    @app.on_partitions_assigned.connect
    async def take_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = kwargs.get("assigned", args[0] if args else ())
        # Held first, with no await before: Faust may hand the agent a batch of the new
        # assignment while this handler waits, and a batch of partitions not yet held is
        # fenced, left unacked and never handed over again (the worker sat idle for good
        # in about one start in ten when the topic check came first).
        ownership.assigned((tp.topic, tp.partition) for tp in assigned)
        item_ownership.assigned((tp.topic, tp.partition) for tp in assigned)
        metrics.partitions_held.set(ownership.held)
        # Checked at every rebalance: the topics may have changed under the worker, which
        # then refuses to go on (streams.topology).
        await verify_topics(settings)

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        # Answered by the event loop: a process whose loop runs is alive, whatever the
        # broker or Redis do (the liveness probe must not restart a worker that waits).
        return web.json({"alive": True})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        # Making progress: the broker answers the progress watch and no held records
        # wait unattended (streams.liveness). Never awaits the broker itself.
        reason = watch.readiness()
        if reason is None:
            return web.json({"ready": True})
        return web.json({"ready": False, "reason": reason}, status=503)

    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        # Never awaits the broker: the lag is the progress watch's last measure, with its
        # age (streams.liveness). aiohttp refuses a charset inside content_type; the
        # format is ASCII anyway.
        return web.bytes(metrics.exposition(), content_type="text/plain; version=0.0.4")

    return app


@cache
def _default_app() -> faust.App:
    return create_app(Settings.from_env())


def __getattr__(name: str) -> Any:
    """``streams.app.app``: the app of the environment's settings, for ``faust -A streams.app``."""
    if name == "app":
        return _default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
