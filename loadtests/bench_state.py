"""What the worker's state cache and its producer save per event: before and after, same run.

Issue 16: with a realistic mix of users (Zipf-distributed activity, exponent
1.1 over 20,000 users: a few hot users in every batch), the worker decoded each
touched user's record again every batch and recomputed their confidences from
the whole history. This times the batch's state work, in one process, on the
same batches, both ways:

- ``before``: every read decodes the table's bytes (:func:`schemas.state.decode`),
  confidences are :func:`models.weighting.user_confidences` of the whole history;
- ``after``: :class:`streams.state.StateTable` (decoded states and their
  confidences kept in memory, copies handed to the batch).

Each batch runs :func:`streams.batch.step` (validation included, the same both
ways), the persist (encode, a producer that acknowledges at once, the table
update) and the confidences of the touched users. Histories start full
(``--history`` rows, the worker's default 100) for every user of the stream,
and every user is read once before the timing: a worker that has run a while
(or refreshed its lists for a model) holds the most recently active ones, up
to ``--cache-users`` (``FRESHREC_STATE_CACHE_USERS``, default 10,000).

With ``--producer`` it also starts a local broker and measures the changelog
write itself, per record: the main thread's CPU (what the worker's event loop
pays) and the whole process's, through Faust's aiokafka producer (the worker
before) and through :class:`freshrec.kafka_producer.AsyncBatchProducer` (after),
on the same records.

Last line: ``{"bench": "state", "us_per_event": {"before": {...}, "after": {...}},
"speedup", "distinct_users_per_1000", "producer_us_per_record": {...}}``.

Run: ``python loadtests/bench_state.py [--producer]`` (under a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "loadtests"))

from bench_stream import draw_users  # noqa: E402

from freshrec.backoff import NoBackoff  # noqa: E402
from freshrec.retry import RetryPolicy  # noqa: E402
from models.weighting import DEFAULT_WEIGHTING, user_confidences  # noqa: E402
from schemas.events import EventType  # noqa: E402
from schemas.state import Interaction, UserState, decode, encode  # noqa: E402
from streams.batch import Inbound, step  # noqa: E402

BASE_TS = 1_735_689_600_000
KINDS: dict[str, EventType] = {"watch": "watch", "rate": "rate", "forget": "forget"}
DEDUPE_WINDOW = 200


def batches(
    n_batches: int, size: int, n_users: int, exponent: float, n_items: int, seed: int
) -> list[list[Inbound]]:
    rng = np.random.default_rng(seed + 1)
    users = draw_users("zipf", n_batches * size, n_users, np.random.default_rng(seed), exponent)
    out: list[list[Inbound]] = []
    for b in range(n_batches):
        batch = []
        for k in range(size):
            n = b * size + k
            user = f"user-{users[n]}"
            event = {
                "type": "watch",
                "event_id": f"ev-{n:012d}-{seed}",
                "user_id": user,
                "item_id": f"item-{rng.integers(n_items)}",
                "watched_s": float(rng.uniform(60, 3000)),
                "duration_s": 1800.0,
                "ts": BASE_TS + 10_000_000 + n,
            }
            batch.append(Inbound("watch", 0, n, user.encode(), orjson.dumps(event)))
        out.append(batch)
    return out


def full_history(user: str, rows: int, n_items: int, seed: int) -> UserState:
    rng = np.random.default_rng(abs(hash((user, seed))) % 2**32)
    history = [
        Interaction(
            f"item-{rng.integers(n_items)}", "watch", float(rng.uniform(60, 3000)), 1800.0, n
        )
        for n in range(BASE_TS, BASE_TS + rows)
    ]
    return UserState(history, [f"old-{user}-{n}" for n in range(DEDUPE_WINDOW)])


class _Data(dict[bytes, bytes]):
    def __init__(self) -> None:
        super().__init__()
        self._key_partition: dict[bytes, int] = {}


class _Topic:
    def get_topic_name(self) -> str:
        return "bench-user-state-changelog"


class _Table:
    """What StateTable reads of a Faust table (see tests/streams/test_state.py)."""

    def __init__(self, data: _Data) -> None:
        self.data = data
        self.changelog_topic = _Topic()

    def on_recover(self, fun: Any) -> Any:
        return fun


class _Acks:
    """A producer whose broker acknowledges everything at once."""

    async def send_records(self, records: Sequence[Any]) -> list[Any]:
        return [None] * len(records)


class Before:
    """The worker's state path before issue 16: decode on every read, recompute everything."""

    def __init__(self, data: _Data) -> None:
        self.data = data

    def get(self, user: str) -> UserState | None:
        raw = self.data.get(user.encode())
        return None if raw is None else decode(raw)

    async def persist(self, writes: dict[str, tuple[int, UserState | None]]) -> None:
        encoded = [
            (user.encode(), partition, None if state is None else encode(state))
            for user, (partition, state) in writes.items()
        ]
        topic = _Topic().get_topic_name()
        await _Acks().send_records([(topic, k, v, p) for k, p, v in encoded])
        for key, partition, value in encoded:
            assert value is not None
            self.data[key] = value
            self.data._key_partition[key] = partition

    def confidences(
        self, users: Sequence[str], states: Sequence[UserState], weighting: Any
    ) -> list[dict[str, float]]:
        return [user_confidences(s.history, weighting) for s in states]


def run(table: Any, work: list[list[Inbound]], history_length: int) -> tuple[dict[str, float], int]:
    """Seconds per stage over ``work``, and the events processed."""
    spent = {"step": 0.0, "persist": 0.0, "confidences": 0.0}
    events = 0
    for batch in work:
        t0 = time.perf_counter()
        result = step(batch, table.get, KINDS, history_length, DEDUPE_WINDOW)
        t1 = time.perf_counter()
        writes = {u: (t.partition, t.state) for u, t in result.touched.items() if t.changed}
        asyncio.run(table.persist(writes))
        t2 = time.perf_counter()
        users = [u for u, t in result.touched.items() if t.state is not None]
        states = [t.state for t in result.touched.values() if t.state is not None]
        table.confidences(users, states, DEFAULT_WEIGHTING)
        t3 = time.perf_counter()
        spent["step"] += t1 - t0
        spent["persist"] += t2 - t1
        spent["confidences"] += t3 - t2
        events += len(batch)
        assert result.tallies.valid["watch"] == len(batch)
    return spent, events


def per_event(spent: dict[str, float], events: int) -> dict[str, float]:
    out = {k: round(v / events * 1e6, 1) for k, v in spent.items()}
    out["total"] = round(sum(spent.values()) / events * 1e6, 1)
    return out


def producer_costs(records: int, record_bytes: int) -> dict[str, dict[str, float]]:
    """Changelog-like records through aiokafka and confluent-kafka: µs of CPU per record."""
    from aiokafka import AIOKafkaProducer

    from freshrec.kafka_producer import AsyncBatchProducer, OutgoingRecord
    from freshrec.settings import Settings
    from freshrec.stack import BrokerProcess
    from streams.delivery import WORKER_PRODUCER_CONFIG
    from streams.topics import ensure_topics

    value = b"x" * record_bytes
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(log_path=Path(tmp) / "broker.log")
        broker.start()
        try:
            settings = Settings.from_env().replace(bootstrap_servers=broker.bootstrap_servers)
            topic = settings.topic_dead_letter
            ensure_topics(settings, [topic])
            batch = [OutgoingRecord(topic, f"user-{n}".encode(), value, n % 4) for n in range(360)]

            async def measure(send: Callable[[], Any]) -> dict[str, float]:
                await send()  # connect, metadata
                cpu, main = time.process_time(), time.thread_time()
                for _ in range(records // len(batch)):
                    await send()
                n = records // len(batch) * len(batch)
                return {
                    "main_thread": round((time.thread_time() - main) / n * 1e6, 2),
                    "process": round((time.process_time() - cpu) / n * 1e6, 2),
                }

            async def aiokafka() -> dict[str, float]:
                producer = AIOKafkaProducer(
                    bootstrap_servers=broker.bootstrap_servers,
                    acks="all",
                    linger_ms=2,
                    max_batch_size=512 * 1024,
                )
                await producer.start()

                async def send() -> None:
                    futures = [
                        await producer.send(r.topic, r.value, r.key, r.partition) for r in batch
                    ]
                    await asyncio.gather(*futures)

                try:
                    return await measure(send)
                finally:
                    await producer.stop()

            async def confluent() -> dict[str, float]:
                producer = AsyncBatchProducer(settings, **WORKER_PRODUCER_CONFIG)

                async def send() -> None:
                    errors = await producer.send_records(batch)
                    assert not any(errors), errors

                try:
                    return await measure(send)
                finally:
                    await producer.close()

            out["aiokafka"] = asyncio.run(aiokafka())
            out["confluent_kafka"] = asyncio.run(confluent())
        finally:
            broker.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--exponent", type=float, default=1.1)
    parser.add_argument("--batch", type=int, default=360)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="batches before timing")
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--producer", action="store_true", help="also time the producers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache-users", type=int, default=10_000, help="FRESHREC_STATE_CACHE_USERS"
    )
    parser.add_argument(
        "--variants",
        default="before,after",
        help="which to run; 'before' alone runs on a checkout that predates the cache too",
    )
    args = parser.parse_args()

    work = batches(
        args.warmup + args.batches, args.batch, args.users, args.exponent, args.items, args.seed
    )
    touched = {m.key for batch in work for m in batch if m.key is not None}
    figures: dict[str, dict[str, float]] = {}
    for name in args.variants.split(","):
        data = _Data()
        for key in touched:
            data[key] = encode(full_history(key.decode(), args.history, args.items, args.seed))
            data._key_partition[key] = 0
        table: Any = Before(data)
        if name == "after":
            from streams.state import StateTable

            retry = RetryPolicy(NoBackoff(), max_attempts=1)
            table = StateTable(_Table(data), _Acks(), retry, args.cache_users)
        # A worker that has run a while holds every user of the stream: each is read
        # (and their confidences made) once, as a model refresh does, then the warm-up.
        users = [key.decode() for key in touched]
        warm = [table.get(user) for user in users]
        table.confidences(users, warm, DEFAULT_WEIGHTING)
        run(table, work[: args.warmup], args.history)
        spent, events = run(table, work[args.warmup :], args.history)
        figures[name] = per_event(spent, events)
        print(f"{name:>6}: " + ", ".join(f"{k} {v} µs/event" for k, v in figures[name].items()))
    timed = [m.key for batch in work[args.warmup :] for m in batch]
    windows = range(0, len(timed) - 999, 1000)
    distinct = sum(len(set(timed[at : at + 1000])) for at in windows) / len(windows)
    out: dict[str, Any] = {
        "bench": "state",
        "users": args.users,
        "exponent": args.exponent,
        "batch": args.batch,
        "history": args.history,
        "distinct_users_per_1000": round(distinct),
        "us_per_event": figures,
    }
    if {"before", "after"} <= figures.keys():
        out["speedup"] = round(figures["before"]["total"] / figures["after"]["total"], 2)
    if args.producer:
        record_bytes = len(encode(full_history("user-0", args.history, args.items, args.seed)))
        out["producer_us_per_record"] = producer_costs(360 * 30, record_bytes)
        print(f"producer, µs per record of {record_bytes} bytes: {out['producer_us_per_record']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
