"""Measure what one user costs: bytes of a list in Redis, bytes of a state in the worker.

Redis: ``--users`` lists of ``FRESHREC_LIST_LENGTH`` items each (item ids,
scores, "because" items from a history of ``FRESHREC_HISTORY_LENGTH`` items, a
model version: what the worker writes, in the compact format of
:class:`schemas.recs.ItemTable`, or with ``--format json`` as JSON,
:func:`schemas.recs.encode`) are stored in a fresh redis-server on loopback,
the way the sink stores them (a hash with ``data`` and ``order``), and
``INFO memory``'s ``used_memory`` before and after, divided by the count, is
the bytes per user (keys, hash encoding and allocator overhead included; the
model's item table, stored once, left out).

Worker state: users with ``--events`` interactions each are built by
:meth:`schemas.state.UserState.apply` (so the history cap, the dedupe window
and the seen items are the worker's own), and measured twice: the changelog
record (:func:`schemas.state.encode`, what Kafka keeps per user in the
compacted topic and what a restart reads) and the Python objects the worker
holds per user (``tracemalloc`` over all the states).

The last line of standard output is one JSON object
``{"bench": "memory", "redis_bytes_per_user", "state_record_bytes_per_user",
"state_heap_bytes_per_user", ...}`` with the per-million figures computed from
them (arithmetic, labelled ``*_per_million_gib``).

Run: ``python loadtests/bench_memory.py`` (about half a minute).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from freshrec.settings import Settings  # noqa: E402
from freshrec.stack import RedisProcess  # noqa: E402
from schemas.events import WatchEvent  # noqa: E402
from schemas.recs import (  # noqa: E402
    DATA_FIELD,
    ORDER_FIELD,
    ItemTable,
    RecItem,
    RecList,
    encode,
    order_token,
    user_key,
)
from schemas.state import UserState  # noqa: E402
from schemas.state import encode as encode_state  # noqa: E402

BASE_TS = 1_735_689_600_000
GIB = 1024**3


VERSION = "20250101T000000000000Z-3f2a"


def a_list(
    rng: np.random.Generator, items: int, length: int, history: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One user's ranked list as the model's arrays: item indices, falling scores, and
    explanations among the user's ``history`` items; and its newest event's time."""
    picked = rng.choice(items, size=length, replace=False)
    scores = np.sort(rng.random(length).astype(np.float32))[::-1]
    seen = rng.choice(items, size=history, replace=False)
    because = rng.choice(seen, size=length)
    return picked, scores, because, BASE_TS + int(rng.integers(10**9))


def redis_bytes_per_user(
    settings: Settings, users: int, items: int, compact: bool
) -> tuple[float, int]:
    """used_memory growth per stored list, and the size of one list's ``data`` field."""
    import redis

    names = [f"item-{i}" for i in range(items)]
    table = ItemTable(VERSION, names)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    server = RedisProcess(log_path=work / "redis.log")
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        rng = np.random.default_rng(3)
        before = int(client.info("memory")["used_memory"])
        sizes = []
        pipe = client.pipeline(transaction=False)
        for u in range(users):
            picked, scores, because, updated_at = a_list(
                rng, items, settings.list_length, settings.history_length
            )
            written_at = BASE_TS + 10**9
            if compact:
                (data,) = table.encode(
                    picked[None, :],
                    scores[None, :],
                    because[None, :],
                    np.ones(1, dtype=bool),
                    [updated_at],
                    written_at,
                )
            else:
                data = encode(
                    RecList(
                        f"user-{u}",
                        "personal",
                        VERSION,
                        updated_at,
                        written_at,
                        tuple(
                            RecItem(names[p], float(s), names[b])
                            for p, s, b in zip(picked, scores, because, strict=True)
                        ),
                    )
                )
            assert data is not None
            sizes.append(len(data))
            key = user_key(settings.key_prefix, f"user-{u}")
            order = order_token(updated_at, VERSION)
            pipe.hset(key, mapping={DATA_FIELD: data, ORDER_FIELD: order})
            if u % 1000 == 999:
                pipe.execute()
        pipe.execute()
        after = int(client.info("memory")["used_memory"])
        client.close()
        return (after - before) / users, int(np.median(sizes))
    finally:
        server.stop()


def states(settings: Settings, users: int, events: int, items: int) -> list[UserState]:
    rng = np.random.default_rng(5)
    out = []
    for u in range(users):
        state = UserState()
        for e in range(events):
            event = WatchEvent(
                event_id=f"ev-{u}-{e}-{int(rng.integers(10**12))}",
                user_id=f"user-{u}",
                item_id=f"item-{int(rng.integers(items))}",
                watched_s=float(rng.integers(60, 5400)),
                ts=BASE_TS + e * 60_000,
                duration_s=5400.0,
            )
            state.apply(event, settings.history_length, settings.dedupe_window)
        out.append(state)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000, help="lists stored in Redis")
    parser.add_argument("--items", type=int, default=20_000, help="catalogue size")
    parser.add_argument("--state-users", type=int, default=2_000, help="states built")
    parser.add_argument(
        "--events", type=int, nargs="+", default=[20, 300],
        help="interactions per user (one measurement each): a light user, one past the caps",
    )  # fmt: skip
    parser.add_argument(
        "--format", choices=("compact", "json"), default="compact",
        help="how the lists are stored: as the worker writes a model's lists, or as JSON",
    )  # fmt: skip
    args = parser.parse_args()
    settings = Settings()

    per_list, data_bytes = redis_bytes_per_user(
        settings, args.users, args.items, args.format == "compact"
    )
    result: dict[str, object] = {
        "bench": "memory",
        "users": args.users,
        "list_format": args.format,
        "list_length": settings.list_length,
        "list_data_bytes": data_bytes,
        "redis_bytes_per_user": round(per_list),
        "redis_per_million_gib": round(per_list * 1e6 / GIB, 2),
        "history_length": settings.history_length,
        "dedupe_window": settings.dedupe_window,
    }
    for events in args.events:
        tracemalloc.start()
        held = states(settings, args.state_users, events, args.items)
        heap, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        record = float(np.mean([len(encode_state(s)) for s in held]))
        result[f"state_record_bytes_per_user_{events}_events"] = round(record)
        result[f"state_record_per_million_gib_{events}_events"] = round(record * 1e6 / GIB, 2)
        result[f"state_heap_bytes_per_user_{events}_events"] = round(heap / len(held))
        result[f"state_heap_per_million_gib_{events}_events"] = round(
            heap / len(held) * 1e6 / GIB, 2
        )
    print(
        f"Redis: {per_list:,.0f} B per user ({data_bytes:,} B of list data); worker state: "
        + ", ".join(
            f"{e} events {result[f'state_record_bytes_per_user_{e}_events']:,} B record, "
            f"{result[f'state_heap_bytes_per_user_{e}_events']:,} B heap"
            for e in args.events
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
