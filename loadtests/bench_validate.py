"""Validator throughput against plain ``json.loads`` of the same bytes, in one run.

    python loadtests/bench_validate.py [--events 100000] [--repeats 5]

Prints events/s for a valid mix (watch/rate/forget), an invalid mix (every
kind of rejection), and ``json.loads`` over the valid bytes as the baseline.
``cost_ratio`` = json_loads rate / valid rate: how many times dearer full
validation into a typed event is than merely parsing the JSON. Goal: <= 2.
Each figure is the best of ``--repeats`` timed passes (least disturbed by
other load). Last line: one JSON object (see docs/ENGINEERING.md, Benchmarks).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

import orjson

from schemas.validator import Rejection, validate


def valid_events(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        user, item, ts = (
            f"user-{rng.randrange(100_000)}",
            f"item-{rng.randrange(20_000)}",
            1_763_870_000_000 + i,
        )
        kind = rng.random()
        if kind < 0.6:
            doc = {
                "type": "watch",
                "event_id": f"ev-{i}",
                "user_id": user,
                "item_id": item,
                "watched_s": round(rng.uniform(1, 7200), 1),
                "duration_s": 7200,
                "ts": ts,
            }
        elif kind < 0.98:
            doc = {
                "type": "rate",
                "event_id": f"ev-{i}",
                "user_id": user,
                "item_id": item,
                "rating": rng.randrange(1, 11) / 2,
                "ts": ts,
            }
        else:
            doc = {"type": "forget", "event_id": f"ev-{i}", "user_id": user, "ts": ts}
        out.append(orjson.dumps(doc))
    return out


def invalid_events(valid: list[bytes], rng: random.Random) -> list[bytes]:
    """One of a dozen faults applied to each valid event."""

    def mutate(raw: bytes) -> bytes:
        doc = orjson.loads(raw)
        fault = rng.randrange(10)
        if fault == 0:
            return raw[: len(raw) // 2]
        if fault == 1:
            return b"\xff" + raw
        if fault == 2:
            doc["user_id"] = "bad user"
        elif fault == 3:
            doc.pop("ts")
        elif fault == 4:
            doc["extra"] = 1
        elif fault == 5:
            doc["ts"] = str(doc["ts"])
        elif fault == 6:
            doc["event_id"] = "e" * 100
        elif fault == 7:
            doc["type"] = "click"
        elif fault == 8:
            return b"[1,2,3]"
        else:
            doc["user_id"] = 42
        return orjson.dumps(doc)

    return [mutate(raw) for raw in valid]


def best_rate(fn: Callable[[list[bytes]], object], data: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn(data)
        best = min(best, time.perf_counter() - started)
    return len(data) / best


def run_validate(data: list[bytes]) -> None:
    for raw in data:
        validate(raw)


def run_json_loads(data: list[bytes]) -> None:
    loads = json.loads
    for raw in data:
        loads(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(42)
    valid = valid_events(args.events, rng)
    invalid = invalid_events(valid, rng)
    assert not any(isinstance(validate(v), Rejection) for v in valid[:1000])
    assert all(isinstance(validate(v), Rejection) for v in invalid[:1000])

    valid_rate = best_rate(run_validate, valid, args.repeats)
    invalid_rate = best_rate(run_validate, invalid, args.repeats)
    json_rate = best_rate(run_json_loads, valid, args.repeats)
    print(f"events per pass       {args.events}")
    print(f"validate, valid       {valid_rate:12,.0f} events/s")
    print(f"validate, invalid     {invalid_rate:12,.0f} events/s")
    print(f"json.loads (baseline) {json_rate:12,.0f} events/s")
    print(
        json.dumps(
            {
                "bench": "validate",
                "valid_events_per_s": round(valid_rate),
                "invalid_events_per_s": round(invalid_rate),
                "json_loads_events_per_s": round(json_rate),
                "cost_ratio": round(json_rate / valid_rate, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
