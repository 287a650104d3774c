"""Faust's aiokafka transport, with corrections for Kafka-compatible brokers such as Tansu.

**No topic auto-creation.** aiokafka asks the broker to create every topic
its metadata requests name (``allow_auto_topic_creation`` is always true), so
a worker whose broker came back without its state created the event topics
and the changelog again with the broker's default partition count, beside
topics freshrec had created with its own (issue 28; :mod:`streams.topology`).
:func:`forbid_topic_auto_creation` makes every aiokafka client of the process
(Faust's consumer and producer, the progress watch's probe) ask without it:
a missing topic is then missing, and the worker notices instead of creating it.

**Fetch wait.** Faust creates its worker consumer with ``fetch_max_wait_ms=1500``
hard-coded. Against Kafka that costs nothing, as a fetch returns as soon as
records arrive. Some Kafka-compatible brokers (Tansu, the test and benchmark
broker) hold every fetch for the full wait instead, which put 1.5 s into the
freshness of every event. The worker's consumer waits at most
``FRESHREC_BATCH_MAX_WAIT_S`` instead, since waiting longer on the broker than
on filling a batch only delays the batch.

**Changelog highwaters.** Faust's table recovery reads each changelog
partition up to the highwater it gets from ``Consumer.highwaters()``, which the
stock driver takes from ListOffsets(LATEST). Tansu (v0.6.0) answers that with
the base offset of the partition's *last record batch* + 1, not the last
offset + 1, while its Fetch responses carry the true high watermark. The worker
sends a batch's changelog records together, so a partition's last record batch
often holds many users; a restarted worker then skipped all of them but the
first and silently lost their state. So before recovery, for every partition
whose ListOffsets answer ``h`` is above 0, a short-lived consumer without a
group fetches once from offset ``h - 1`` (an offset that exists, so the broker
answers at once) and the high watermark of that Fetch response is used when it
is larger. On Kafka the two agree and recovery reads exactly what it read
before; the cost is one connection and one fetch per recovery, none when every
changelog partition is empty. The probe is bounded by Faust's
``broker_request_timeout`` (the bound Faust puts on the whole highwater step);
past it, the ListOffsets answer stands, as in stock Faust, with a warning.

**Leaving the group at generation 0.** A worker that stops (SIGTERM) sends
LeaveGroup, so that the others take its partitions over at once instead of
after its session timeout. aiokafka sends it only when the group's generation
is above 0; Kafka numbers the first generation 1, but Tansu numbers it 0, so
workers that joined together never left their first generation: the survivor
of a SIGTERM waited for the whole session timeout, plus a rebalance
(``tests/streams/test_chaos.py``). The worker's consumer leaves whenever it
has a member id, whatever the generation.

**A bounded stop.** A stopping Faust app waits until every message handed
to the agent is acked. A batch waiting out a retry (Redis or the broker down)
held a SIGTERMed worker for 99-132 s, past the pod's grace period of 60 s. A
stopping worker waits at most ``stop_wait_s`` for its batches in flight, then
stops waiting for them: their offsets are not acked, so not committed, and the
partitions' next owner processes them again (issue 28).

**Acking a batch at once.** Faust acks one event at a time (``Stream.ack``
-> ``Event.ack`` -> ``Message.ack`` -> ``Consumer.ack``, a lock and a wake-up
each, and two sensor calls), some ten Python calls per event.
:meth:`ack_processed` does the same bookkeeping for a whole batch in one pass.
Acking only the last offset of each partition would not do: Faust commits the
first run of *consecutive* acked offsets and keeps the rest, so a lone last
offset after a run of unacked ones would never be committed (nor would
anything after it), and a revoke or shutdown would wait for every unacked
message. So every processed offset is still entered, and only those.

**Seeking back after a recovery, with nothing in flight.** When a table
recovery completes, Faust resumes the stream partitions, seeks them back to
their committed offsets (``perform_seek``, one OffsetFetch per assigned
partition, 50-100 ms) and only then resumes its flow control, which *clears*
every stream queue. The consumer's flow was already running (recovery resumed
it to read the changelogs), so records fetched during the seek were handed to
the agent's queue, their read offsets and the fetch positions moved past them,
and the clear dropped whatever was still queued: aiokafka seeks back only
partitions with a commit above 0, so on a partition without one those records
were never fetched again, and the acks after them made Faust commit over the
hole (it tolerates one missing offset at the head of the acked ones). A user
lost one event this way in about one takeover in ten (the SIGKILL takeover of
``tests/streams/test_worker_faults.py``). So the worker's ``perform_seek``
stops the flow first (nothing more is handed over until the caller resumes it,
which both of Faust's callers do right after the seek), and seeks every
partition of the consumed topics back: to its commit, or to its start when it
has none (the consumer resets to ``earliest``, where it started). Whatever the
clear drops is fetched again; what was processed in the meantime comes again as
duplicates.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, cast

import aiokafka
import aiokafka.client
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import KafkaError
from aiokafka.protocol.group import JoinGroupRequest, LeaveGroupRequest
from aiokafka.protocol.metadata import MetadataRequest
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)


class MetadataWithoutCreation(MetadataRequest):
    """aiokafka's metadata request, asking the broker not to create the topics it names."""

    def __init__(
        self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False
    ) -> None:
        super().__init__(topics, allow_auto_topic_creation)


def forbid_topic_auto_creation() -> None:
    """Make every aiokafka client of this process send :class:`MetadataWithoutCreation`
    (module doc). aiokafka has no setting for it; its client builds each request from
    the ``MetadataRequest`` name of its own module, which this rebinds."""
    aiokafka.client.MetadataRequest = MetadataWithoutCreation


async def fetched_highwaters(
    probe: aiokafka.AIOKafkaConsumer, listed: Mapping[TP, int], wait_ms: int
) -> dict[TP, int]:
    """The high watermark of one Fetch response per partition, from offset ``h - 1``.

    ``listed`` holds each partition's ListOffsets answer ``h`` (above 0);
    ``probe`` is a started consumer without a group. It is left assigned to
    these partitions.
    """
    probe.assign(list(listed))
    for tp, high in listed.items():
        probe.seek(tp, high - 1)
    pending = set(listed)
    while pending:
        # The probe's fetcher fetches in the background; getmany returns once
        # records are in (at once here, as h - 1 exists) or after one fetch wait.
        # One record is enough: the high watermark comes with the response. Tansu's
        # ListOffsets can name a batch thousands of records below the end, and
        # decoding all of them every second was 4-8% of the worker's main thread at
        # full load (issue 27's profile); the rest are dropped at the next assign.
        await probe.getmany(*pending, timeout_ms=wait_ms, max_records=1)
        pending = {tp for tp in pending if probe.highwater(tp) is None}
    return {tp: probe.highwater(tp) for tp in listed}


async def leave_group(coordinator: GroupCoordinator) -> None:
    """Send LeaveGroup for a member that joined, at any generation, then forget the membership.

    aiokafka's own ``_maybe_leave_group``, less its ``generation > 0`` test (see
    module doc); like it, one best-effort request, and none for a static member.
    """
    joined = coordinator.member_id != JoinGroupRequest.UNKNOWN_MEMBER_ID
    if joined and coordinator.generation >= 0 and coordinator._group_instance_id is None:
        request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
        try:
            await coordinator._send_req(request)
        except KafkaError as exc:
            log.warning("LeaveGroup failed (%s): the group waits for the session timeout", exc)
        else:
            log.info("left group %s (generation %d)", coordinator.group_id, coordinator.generation)
    coordinator.reset_generation()


async def rewind_to_committed(
    consumer: aiokafka.AIOKafkaConsumer, rewinds: Callable[[TP], bool]
) -> dict[TP, int | None]:
    """Seek every assigned partition to its committed offset; those of ``rewinds`` without a
    commit (none, or 0) to their first offset, which aiokafka's own ``seek_to_committed``
    leaves where they are (see module doc). Returns the committed offsets, as it does."""
    committed: dict[TP, int | None] = await consumer.seek_to_committed()
    fresh = [tp for tp, offset in committed.items() if not offset and rewinds(tp)]
    if fresh:
        await consumer.seek_to_beginning(*fresh)
    return committed


def transport_class(
    fetch_max_wait_s: float,
    on_revoking: Callable[[set[TP]], None] | None = None,
    stop_wait_s: float | None = None,
) -> type[driver.Transport]:
    """A ``faust`` Kafka transport whose worker consumer waits at most ``fetch_max_wait_s``,
    whose changelog highwaters are the ones Fetch responses report, which leaves its
    group at any generation, creates no topic by asking for its metadata and, when
    ``stop_wait_s`` is given, waits at most that long for batches in flight as it
    stops (see module doc).

    ``on_revoking`` is called with the partitions of every revoke as it starts,
    before Faust waits for the batches in flight (Faust's own
    ``on_partitions_revoked`` signal comes after that wait).
    """
    wait_ms = max(1, int(fetch_max_wait_s * 1000))
    forbid_topic_auto_creation()

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by AIOKafkaConsumer.start() when it builds its fetcher, which
            # happens after this method returns; there is no public setter.
            consumer._fetch_max_wait_ms = wait_ms
            return consumer

        async def on_thread_stop(self) -> None:
            # The coordinator exists once the consumer started; stopping it
            # calls _maybe_leave_group after the heartbeats stopped.
            coordinator = None if self._consumer is None else self._consumer._coordinator
            if coordinator is not None:
                coordinator._maybe_leave_group = partial(leave_group, coordinator)
            await super().on_thread_stop()

        async def seek_to_committed(self) -> Mapping[TP, int]:
            consumer = self._ensure_consumer()
            faust_consumer = self.consumer
            # Changelogs are never committed: recovery positions them itself.
            # Only a consumer that starts from the earliest offset started there.
            earliest = self.app.conf.consumer_auto_offset_reset == "earliest"

            def rewinds(tp: TP) -> bool:
                return earliest and not faust_consumer._is_changelog_tp(tp)

            committed: Mapping[TP, int] = await self.call_thread(
                rewind_to_committed, consumer, rewinds
            )
            return committed

        async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
            listed = await super()._highwaters(partitions)
            if self.consumer.in_transaction:
                return listed  # last stable offsets, from Fetch responses already
            behind = {tp: h for tp, h in listed.items() if h}
            if not behind:
                return listed
            timeout_s = self.app.conf.broker_request_timeout
            try:
                fetched = await asyncio.wait_for(self._fetched_highwaters(behind), timeout_s)
            except TimeoutError:
                log.warning(
                    "no Fetch high watermark for %d changelog partition(s) within %.0fs; "
                    "recovering up to the ListOffsets answer",
                    len(behind),
                    timeout_s,
                )
                return listed
            corrected = dict(listed)
            for tp, high in fetched.items():
                if high > corrected[tp]:
                    log.info(
                        "highwater of %s:%d is %d (ListOffsets said %d)",
                        tp.topic,
                        tp.partition,
                        high,
                        corrected[tp],
                    )
                    corrected[tp] = high
            return corrected

        async def _fetched_highwaters(self, listed: Mapping[TP, int]) -> dict[TP, int]:
            """The high watermark of one Fetch response per partition, from offset ``h - 1``."""
            conf = self.app.conf
            transport = cast(driver.Transport, self.transport)
            probe = aiokafka.AIOKafkaConsumer(
                bootstrap_servers=driver.server_list(transport.url, transport.default_port),
                client_id=conf.broker_client_id,
                group_id=None,
                enable_auto_commit=False,
                # h - 1 gone (retention): read from the end, whose Fetch says the same.
                auto_offset_reset="latest",
                fetch_max_wait_ms=wait_ms,
                request_timeout_ms=int(conf.broker_request_timeout * 1000),
                check_crcs=False,
                **driver.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
            )
            await probe.start()
            try:
                return await fetched_highwaters(probe, listed, wait_ms)
            finally:
                await probe.stop()

    class TunedConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        async def on_partitions_revoked(self, revoked: set[TP]) -> None:
            if on_revoking is not None:
                on_revoking(revoked)
            # Faust forgets the revoked partitions' acked offsets before its
            # last commit of the revoke: commit them while it still has them,
            # or their next owner processes them again.
            await self.commit()
            await super().on_partitions_revoked(revoked)

        async def perform_seek(self) -> None:
            # Nothing may be handed to the agent between the seek and the clear of
            # the stream queues that follows it (module doc); the caller resumes.
            flowing = self.flow_active
            if flowing:
                self.stop_flow()
            try:
                await super().perform_seek()
            except BaseException:
                if flowing:
                    self.resume_flow()
                raise

        async def wait_empty(self) -> None:
            if stop_wait_s is None or not self.app.should_stop:
                await super().wait_empty()
                return
            # Faust's own loop, with a deadline. Not wait_for(super().wait_empty()):
            # its wait for acks swallows the cancellation, and the loop goes on.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + stop_wait_s
            while self._unacked_messages and loop.time() < deadline:
                await self.commit()
                await self._wait_for_ack(timeout=min(1.0, max(0.0, deadline - loop.time())))
                self._clean_unacked_messages()
            if self._unacked_messages:
                log.warning(
                    "stopping without %d event(s) of batches still in flight after %.0fs "
                    "(waiting out a retry?): not acked, so not committed; the partitions' "
                    "next owner processes them",
                    len(self._unacked_messages),
                    stop_wait_s,
                )
                self._unacked_messages.clear()
            await self.commit_and_end_transactions()

        def _new_offset(self, tp: TP) -> int | None:
            # Faust commits the first run of consecutive acked offsets and keeps
            # the rest for the next commit; a repeated offset ends a run, and
            # after a takeover its list held hundreds of repeats (the gaps it
            # folds in end at an offset that is acked too), so each commit
            # moved one offset and the commits stayed behind what was processed
            # (test_chaos.py). Fold the gaps in here, once, without repeats.
            acked = self._acked[tp]
            gaps = self._gap[tp]
            if acked and gaps:
                top = max(acked)
                for gap in gaps.overlap(0, top + 1):
                    acked.extend(range(gap.begin, gap.end))
                gaps.chop(0, top + 1)
            acked[:] = sorted(set(acked))
            new: int | None = super()._new_offset(tp)
            return new

        def ack_processed(self, messages: Sequence[Message]) -> dict[TP, int]:
            """Ack ``messages`` as Faust's per-event ``Stream.ack`` would, in one pass; returns,
            per partition, the offset after the highest of them (the next one to process).

            Under one hold of Faust's ``ack_lock``, each message drops one reference
            (one per stream that got it); one that has none left is acked: its offset
            joins its partition's acked offsets (``_acked``, which the commit reads),
            unless it is below the last commit or there already, the very tests of
            ``Consumer.ack``. Waiters for acks (a revoke, a shutdown) are woken once.
            Faust's sensors are not called per event: they only keep Faust's own
            statistics (the worker exports its own metrics).
            """
            final: dict[TP, list[int]] = defaultdict(list)
            after: dict[TP, int] = {}
            discard = self._unacked_messages.discard
            with ack_lock:
                for message in messages:
                    tp, offset = message.tp, message.offset
                    if offset >= after.get(tp, 0):
                        after[tp] = offset + 1
                    if message.acked:
                        continue
                    message.refcount = max(message.refcount - 1, 0)
                    if message.refcount:
                        continue
                    message.acked = True
                    final[tp].append(offset)
                    discard(message)
                enabled = self.app.topics.acks_enabled_for
                for tp, offsets in final.items():
                    if not enabled(tp.topic):
                        continue
                    committed = self._committed_offset[tp]
                    index = self._acked_index[tp]
                    new = [
                        o
                        for o in offsets
                        if (committed is None or o >= committed) and o not in index
                    ]
                    index.update(new)
                    self._acked[tp].extend(new)
                    self._n_acked += len(new)
            notify(self._waiting_for_ack)
            return after

        def forget(self, messages: Iterable[Message]) -> None:
            """Stop waiting for ``messages``, which will never be acked (their partitions
            were revoked): Faust's revoke and shutdown wait for every unacked message."""
            for message in messages:
                self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)

    class Transport(driver.Transport):
        Consumer = TunedConsumer

    return Transport
