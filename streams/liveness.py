"""The worker's progress watch: a worker that holds work it does not do ends itself.

Two faults left a worker up, "ready" and idle while events waited:

* **A broker that lost its log** (restarted without its data). Faust keeps
  each partition's last read offset in memory and silently drops every record
  below it, so the new log's first records (offsets from 0 again) never reach
  the agent. Every second the watch reads each event topic's id and every
  held partition's end offset. A topic id other than the first one seen (the
  topic was created again), a topic gone, or an end below one seen before or
  below the next offset the agent expects (at two checks in a row: the local
  broker once answered 0 for a partition the worker had read a record of, and
  the worker exited 75 in a test), means the broker lost records. The topic id
  is the robust signal: a log refilled past its old end between two checks
  hides the loss from end offsets, not from the id.
* **No progress with lag.** Whatever the cause, a worker that holds
  partitions with records past what it processed, has no batch in flight,
  and received nothing for ``stall_timeout_s`` is stuck.

Either way the watch logs why, counts it (``freshrec_worker_stalls_total``)
and ends the process with exit status 75, without acking anything: a
supervisor restarts it, and a fresh process reads from the committed offsets
(Faust's in-memory offsets die with it). A batch in flight is never a stall:
its own retry deadline bounds it.

The watch also reports an event topic whose partition count differs from the
one seen at the first check (``freshrec_worker_topic_partitions_changed``):
keys then map to other partitions, and a user's events and state no longer
meet in one worker. A restart does not fix that, so it is reported, not acted on.

**Lost offsets are counted** (``freshrec_worker_broker_lost_offsets_total``,
issue 28). The events of a log the broker lost cannot come back, but ops must
know how many: each check keeps, in a small file in the worker's data
directory (:data:`LEDGER_NAME`), every event topic's id and the offsets this
worker knew each partition reached. A process that finds the loss in flight
logs the figures and exits (above); the next process (a supervisor's restart,
with the same data directory: an ``emptyDir`` outlives a container's restart)
compares the file with the broker at its first check, counts the offsets that
are gone (all those of a topic created again, those past a partition's end
otherwise), logs them per partition and goes on. Counted once, by the process
that lives on to be scraped.

**Consumer lag** is measured at each check too, from the end offsets it
reads, against the next offset to process: the last processed one, else the
partition's last commit, else the first offset the agent received (a batch
that never completes shows its whole backlog, not 0). ``/metrics`` never
waits on the broker: during a partition it shows the last lag measured, with
its age (``freshrec_worker_consumer_lag_age_seconds``).

The checks use clients of their own (an admin client for topic ids and
partition counts, a consumer without a group for end offsets, read as the
Fetch high watermark, see :mod:`streams.transport`), so they work while the
worker's own consumer is stuck.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiokafka
import orjson
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from confluent_kafka import KafkaError as KafkaErrorCode
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from freshrec.errors import TransientError
from freshrec.settings import Settings
from streams.metrics import WorkerMetrics
from streams.transport import fetched_highwaters

log = logging.getLogger(__name__)

#: Longest wait of the probe's fetches: they start at an offset that exists.
_FETCH_WAIT_MS = 100
#: The file, in the worker's data directory, of the event topics' ids and the offsets
#: each partition was seen to reach (module doc, "Lost offsets are counted").
LEDGER_NAME = "offsets-seen.json"

#: Seconds without an answer from the broker after which the worker is not ready.
READY_ANSWER_S = 10.0

#: A partition: (topic, number).
Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class TopicShape:
    """What identifies a topic's log: its id (new when the topic is created again) and size."""

    topic_id: str
    partitions: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one check found: a reason to exit, or None."""

    stalled: str | None
    lost: bool = False
    """The broker lost records: the ledger keeps what was seen, for the next process."""


def _figures(gone: Mapping[Key, int]) -> str:
    """``12 offset(s) (watch[0]: 5, watch[3]: 7)``: a loss, in a log line."""
    parts = ", ".join(f"{t}[{p}]: {n}" for (t, p), n in sorted(gone.items()))
    return f"{sum(gone.values())} offset(s) ({parts or 'none'})"


class ProgressWatch:
    """Tracks what the agent received and decides, at each :meth:`check`, whether it is stuck."""

    def __init__(
        self,
        settings: Settings,
        topics: Collection[str],
        metrics: WorkerMetrics,
        clock: Callable[[], float] = time.monotonic,
        committed: Callable[[Key], int | None] = lambda key: None,
        ledger: Path | None = None,
        rewind: Callable[[list[Key]], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._topics = frozenset(topics)
        self._metrics = metrics
        self._clock = clock
        self._last_progress = clock()
        self._in_flight = 0
        #: Next offset the agent expects per partition (last received + 1).
        self._next: dict[tuple[str, int], int] = {}
        #: Highest end offset a check saw per held partition.
        self._ends: dict[tuple[str, int], int] = {}
        #: Held partitions whose end the last check found below what was reached: a loss
        #: is declared on the second such check in a row, not on one answer.
        self._low: set[tuple[str, int]] = set()
        #: Each event topic's id and partition count at the first check that saw it.
        self._first: dict[str, TopicShape] = {}
        self._partitions: dict[str, int] = {}
        self._probe: aiokafka.AIOKafkaConsumer | None = None
        self._admin: AdminClient | None = None
        #: Next offset to process per held partition, and the first one received.
        self._processed: dict[Key, int] = {}
        self._started: dict[Key, int] = {}
        self._committed = committed
        self._lag_series: set[Key] = set()
        self._lag_measured_at = clock()
        metrics.consumer_lag_age.set_function(self.answer_age)
        metrics.seconds_since_progress.set_function(
            lambda: 0.0 if self._in_flight else self._clock() - self._last_progress
        )
        self._ledger_path = ledger
        self._rewind = rewind
        #: Held partitions whose last commit the last check found past their end.
        self._beyond: set[Key] = set()
        for topic in self._topics:  # each series exists from the start, at 0
            metrics.broker_lost_offsets.labels(topic)
        #: topic -> {"id": topic id, "reached": {partition: offset}}; None until reconciled.
        self._ledger: dict[str, dict[str, Any]] | None = None

    def received(self, messages: Iterable[tuple[str, int, int]]) -> None:
        """The agent got a batch of ``(topic, partition, offset)``: progress."""
        nxt, started = self._next, self._started
        for topic, partition, offset in messages:
            key = (topic, partition)
            if offset + 1 > nxt.get(key, 0):
                nxt[key] = offset + 1
            if offset < started.get(key, offset + 1):
                started[key] = offset
        self._last_progress = self._clock()

    def processed(self, after: Mapping[Key, int]) -> None:
        """A batch was processed and acked: ``after`` holds, per partition, the next offset."""
        done = self._processed
        for key, offset in after.items():
            if offset > done.get(key, 0):
                done[(key[0], key[1])] = offset

    def batch_started(self) -> None:
        self._in_flight += 1

    def batch_done(self) -> None:
        self._in_flight -= 1
        self._last_progress = self._clock()

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget what was expected of partitions this worker no longer holds."""
        for key in partitions:
            self._next.pop(key, None)
            self._ends.pop(key, None)
            self._processed.pop(key, None)
            self._started.pop(key, None)

    def _reached(self, key: tuple[str, int]) -> int:
        """The furthest offset this worker knows partition ``key`` reached."""
        return max(self._next.get(key, 0), self._ends.get(key, 0))

    def judge(
        self,
        assigned: Collection[tuple[str, int]],
        ends: Mapping[tuple[str, int], int],
        shapes: Mapping[str, TopicShape],
    ) -> Verdict:
        """The decision, from the held partitions, their end offsets and the event
        topics' ids and partition counts (pure but for what it remembers)."""
        for topic in sorted(self._first.keys() - shapes.keys()):
            seen = {k: self._reached(k) for k in self._next.keys() | self._ends.keys()}
            gone = {k: n for k, n in seen.items() if k[0] == topic and n > 0}
            return Verdict(
                f"topic {topic} no longer exists: the broker lost its data (restarted without "
                f"it?), with {_figures(gone)} this worker had seen (the restarted worker "
                "counts them); the restarted worker creates it again",
                lost=True,
            )
        for topic, shape in sorted(shapes.items()):
            first = self._first.setdefault(topic, shape)
            if shape.topic_id != first.topic_id:
                seen = {k: self._reached(k) for k in self._next.keys() | self._ends.keys()}
                gone = {k: n for k, n in seen.items() if k[0] == topic and n > 0}
                return Verdict(
                    f"topic {topic} was created again (id {shape.topic_id}, was "
                    f"{first.topic_id}): the broker lost its data (restarted without it?), "
                    f"with {_figures(gone)} this worker had seen (the restarted worker counts "
                    "them), and this process would drop new records below the offsets it read",
                    lost=True,
                )
            changed = shape.partitions != first.partitions
            self._metrics.partitions_changed.labels(topic).set(1 if changed else 0)
            if changed:
                log.error(
                    "topic %s has %d partitions, %d when this worker started: keys now map "
                    "to other partitions, so a user's events and state may reach different "
                    "workers; restore the count or migrate the state",
                    topic,
                    shape.partitions,
                    first.partitions,
                )
        low = set()
        for key in sorted(assigned):
            end = ends.get(key)
            if end is None:
                continue
            known = self._reached(key)
            if end < known:
                low.add(key)
                if key not in self._low:
                    continue  # one low answer may be the broker's slip: the next check decides
                return Verdict(
                    f"partition {key[0]}[{key[1]}] ends at offset {end}, below offset "
                    f"{known} that it reached before: the broker lost {known - end} "
                    "offset(s) (restarted without its data?; the restarted worker counts "
                    "them), and this process would drop new records below that offset",
                    lost=True,
                )
            self._ends[key] = end
        self._low = low
        quiet = self._clock() - self._last_progress
        if self._in_flight or quiet < self._settings.stall_timeout_s:
            return Verdict(None)
        behind = [
            key
            for key in sorted(assigned)
            if key in self._next and ends.get(key, 0) > self._next[key]
        ]
        if behind:
            lag = sum(ends[k] - self._next[k] for k in behind)
            return Verdict(
                f"no progress for {quiet:.0f}s while {len(behind)} held partition(s) have "
                f"{lag} record(s) waiting"
            )
        return Verdict(None)

    async def check(self, assigned: Collection[tuple[str, int]]) -> Verdict:
        """One check against the broker; a broker that does not answer is no verdict."""
        held = [key for key in assigned if key[0] in self._topics]
        try:
            ends, shapes = await asyncio.wait_for(self._query(held), self._settings.stall_timeout_s)
        except (KafkaError, TransientError, OSError, TimeoutError) as exc:
            log.warning("progress check: broker did not answer (%r)", exc)
            return Verdict(None)
        await self._rewind_commits_past_the_end(held, ends)
        self._measure_lag(held, ends)
        if self._ledger is None:
            self._reconcile(shapes, ends)
        verdict = self.judge(held, ends, shapes)
        self._metrics.progress_checks.inc()
        if verdict.stalled is not None:
            self._metrics.stalls.inc()
        if not verdict.lost:
            self._keep_ledger(held, shapes)
        return verdict

    async def _rewind_commits_past_the_end(
        self, held: Collection[Key], ends: Mapping[Key, int]
    ) -> None:
        """Read from its start a held partition whose last commit is past its end (at two
        checks in a row): the log was lost and created again after that commit (a worker
        still running committed its old offsets on the new log). Kafka answers a fetch past
        the end OFFSET_OUT_OF_RANGE and the consumer resets to the start by itself; the
        local broker (Tansu) answers nothing, and the worker waited there for ever, the
        new log's events unread (test_chaos.py, broker restarted without its data)."""
        beyond = set()
        for key in held:
            commit, end = self._committed(key), ends.get(key)
            if commit is not None and end is not None and commit > end:
                beyond.add(key)
        confirmed = sorted(beyond & self._beyond)
        self._beyond = beyond - set(confirmed)
        if confirmed and self._rewind is not None:
            log.warning(
                "committed offsets past the end of %s (the broker lost the log since): "
                "reading them from their start",
                ", ".join(f"{t}[{p}] ({self._committed((t, p))} > {ends[(t, p)]})"
                          for t, p in confirmed),
            )  # fmt: skip
            await self._rewind(confirmed)

    def answer_age(self) -> float:
        """Seconds since a check last got the broker's answer (since start, before the first)."""
        return self._clock() - self._lag_measured_at

    def readiness(self) -> str | None:
        """Why this worker is not making progress now, or None: the worker's ``/readyz``.

        Not ready while the broker has not answered a check for
        :data:`READY_ANSWER_S` (a partition, a broker down), or while records wait
        on held partitions with no batch in flight and nothing received for half
        the stall timeout (the watch ends the process at the whole of it).
        """
        age = self.answer_age()
        if age > READY_ANSWER_S:
            return f"the broker has not answered for {age:.0f}s"
        quiet = self._clock() - self._last_progress
        waiting = any(end > self._next.get(key, end) for key, end in self._ends.items())
        if waiting and not self._in_flight and quiet > self._settings.stall_timeout_s / 2:
            return f"records wait and nothing was received for {quiet:.0f}s"
        return None

    def _measure_lag(self, held: Collection[Key], ends: Mapping[Key, int]) -> None:
        """Set each held partition's lag from its end offset (module doc); remove the
        series of partitions no longer held."""
        current: set[Key] = set()
        for key in held:
            end = ends.get(key)
            if end is None:
                continue
            start = self._processed.get(key)
            if start is None:
                start = self._committed(key)
            if start is None:
                start = self._started.get(key, end)
            self._metrics.consumer_lag.labels(key[0], str(key[1])).set(max(0, end - start))
            current.add(key)
        for key in self._lag_series - current:
            self._metrics.consumer_lag.remove(key[0], str(key[1]))
        self._lag_series = current
        self._lag_measured_at = self._clock()

    def _reconcile(self, shapes: Mapping[str, TopicShape], ends: Mapping[Key, int]) -> None:
        """At the first check that got an answer: count what the previous process (or
        another worker) had seen that the broker no longer holds, and start the ledger."""
        old = self._read_ledger()
        ledger: dict[str, dict[str, Any]] = {}
        for topic, shape in shapes.items():
            entry = old.get(topic)
            reached: dict[str, int] = {}
            gone: dict[Key, int] = {}
            if entry is not None and entry.get("id") != shape.topic_id:
                gone = {(topic, int(p)): n for p, n in entry["reached"].items() if n > 0}
            elif entry is not None:
                for p, n in entry["reached"].items():
                    end = ends.get((topic, int(p)))
                    if end is not None and end < n:
                        gone[(topic, int(p))] = n - end
                        n = end
                    reached[p] = n
            total = sum(gone.values())
            if total:
                self._metrics.broker_lost_offsets.labels(topic).inc(total)
                log.error(
                    "the broker lost %s of %s that this worker had seen; their events cannot "
                    "be recovered by freshrec: publish them again if the site still has them",
                    _figures(gone),
                    topic,
                )
            ledger[topic] = {"id": shape.topic_id, "reached": reached}
        self._ledger = ledger

    def _keep_ledger(self, held: Collection[Key], shapes: Mapping[str, TopicShape]) -> None:
        """Record the held partitions' reached offsets in the ledger file (atomically)."""
        if self._ledger is None or self._ledger_path is None:
            return
        for topic, shape in shapes.items():
            self._ledger.setdefault(topic, {"id": shape.topic_id, "reached": {}})
        for key in held:
            entry = self._ledger.get(key[0])
            if entry is not None:
                entry["reached"][str(key[1])] = self._reached(key)
        path = self._ledger_path
        temporary = path.with_name(f"{path.name}.{os.getpid()}")
        try:
            temporary.write_bytes(orjson.dumps(self._ledger))
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("cannot keep %s (%s): lost offsets will not be counted", path, exc)

    def _read_ledger(self) -> dict[str, dict[str, Any]]:
        if self._ledger_path is None:
            return {}
        try:
            found = orjson.loads(self._ledger_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("ignoring %s (%s)", self._ledger_path, exc)
            return {}
        return found if isinstance(found, dict) else {}

    async def _query(
        self, held: list[tuple[str, int]]
    ) -> tuple[dict[tuple[str, int], int], dict[str, TopicShape]]:
        shapes = await self._shapes()
        # A held partition the broker does not know (topic gone) ends at 0.
        gone = {
            key: 0 for key in held if key[0] not in shapes or key[1] >= shapes[key[0]].partitions
        }
        known = [TopicPartition(t, p) for t, p in held if (t, p) not in gone]
        if not known:
            return gone, shapes
        probe = await self._probe_client()
        listed = await probe.end_offsets(known)
        # ListOffsets on Tansu names the last record *batch*, which can be
        # below offsets this worker read (0 for a partition that holds one
        # record): the Fetch high watermark decides, for every partition that
        # answered above 0, that this worker read from, or that has a commit
        # (a commit past a false 0 would be rewound, _rewind_commits_past_the_end).
        behind = {
            tp: max(end, 1)
            for tp, end in listed.items()
            if end
            or self._reached((tp.topic, tp.partition)) > 0
            or (self._committed((tp.topic, tp.partition)) or 0) > 0
        }
        fetched = await fetched_highwaters(probe, behind, _FETCH_WAIT_MS) if behind else {}
        ends = {
            (tp.topic, tp.partition): max(end, fetched.get(tp, 0)) for tp, end in listed.items()
        }
        return ends | gone, shapes

    async def _shapes(self) -> dict[str, TopicShape]:
        """Id and partition count of each event topic that exists (one DescribeTopics)."""
        if self._admin is None:
            self._admin = AdminClient(
                {
                    "bootstrap.servers": self._settings.bootstrap_servers,
                    "socket.timeout.ms": int(self._settings.stall_timeout_s * 1000),
                }
            )
        timeout_s = self._settings.stall_timeout_s
        futures = self._admin.describe_topics(
            TopicCollection(sorted(self._topics)), request_timeout=timeout_s
        )
        shapes: dict[str, TopicShape] = {}
        for topic, future in futures.items():
            try:
                found = await asyncio.wrap_future(future)
            except KafkaException as exc:
                if exc.args and exc.args[0].code() == KafkaErrorCode.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise TransientError(f"describe {topic}: {exc}") from exc
            shapes[topic] = TopicShape(str(found.topic_id), len(found.partitions))
        return shapes

    async def _probe_client(self) -> aiokafka.AIOKafkaConsumer:
        if self._probe is None:
            probe = aiokafka.AIOKafkaConsumer(
                bootstrap_servers=self._settings.bootstrap_servers,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
                fetch_max_wait_ms=_FETCH_WAIT_MS,
                request_timeout_ms=int(self._settings.stall_timeout_s * 1000),
            )
            await probe.start()
            self._probe = probe
        return self._probe

    async def close(self) -> None:
        if self._probe is not None:
            await self._probe.stop()
            self._probe = None
