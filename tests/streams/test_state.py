"""The state table's decoded cache, against a stand-in for Faust's table and the producer.

The stand-in table is what :class:`streams.state.StateTable` reads of Faust's:
``data`` (the memory store's dict of bytes, with its ``_key_partition``), the
changelog topic's name and ``on_recover``. What Faust does to them on a
rebalance (drop the revoked partitions' keys, then call the recover
callbacks) is done here by hand, as ``faust/stores/memory.py`` does it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import orjson
import pytest

from freshrec.backoff import NoBackoff
from freshrec.errors import TransientError
from freshrec.kafka_producer import DeliveryError, OutgoingRecord
from freshrec.retry import RetryPolicy
from models.weighting import WeightingConfig, user_confidences
from schemas.events import EventType
from schemas.state import Interaction, UserState, decode, encode
from streams.batch import Inbound, step
from streams.delivery import RecordRefusedError
from streams.state import StateTable
from tests.streams.worker import watch as watch_event

BASE_TS = 1_735_689_600_000
KINDS: dict[str, EventType] = {"watch": "watch", "rate": "rate", "forget": "forget"}
TOPIC = "app-user-state-changelog"


class _Data(dict[bytes, bytes]):
    """Faust's memory store's ``data``, with the key -> partition map it keeps beside it."""

    def __init__(self) -> None:
        super().__init__()
        self._key_partition: dict[bytes, int] = {}


class _Topic:
    def get_topic_name(self) -> str:
        return TOPIC


class FakeTable:
    def __init__(self) -> None:
        self.data = _Data()
        self.changelog_topic = _Topic()
        self.recover_callbacks: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def on_recover(
        self, fun: Callable[[], Coroutine[Any, Any, None]]
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        self.recover_callbacks.append(fun)
        return fun

    def rebalance(self, held_partitions: set[int]) -> None:
        """What Faust does at the end of a recovery: drop other partitions' keys, call back."""
        for key, partition in list(self.data._key_partition.items()):
            if partition not in held_partitions:
                self.data.pop(key, None)
                self.data._key_partition.pop(key, None)
        for callback in self.recover_callbacks:
            asyncio.run(callback())


class FakeProducer:
    """Acknowledges every record, or fails them all with ``failure``."""

    def __init__(self) -> None:
        self.sent: list[OutgoingRecord] = []
        self.failure: DeliveryError | None = None

    async def send_records(self, records: Sequence[OutgoingRecord]) -> list[DeliveryError | None]:
        self.sent.extend(records)
        return [self.failure] * len(records)


def table(capacity: int = 100) -> tuple[StateTable, FakeTable, FakeProducer]:
    fake, producer = FakeTable(), FakeProducer()
    retry = RetryPolicy(NoBackoff(), max_attempts=1)
    return StateTable(fake, producer, retry, capacity), fake, producer


def watch(event_id: str, user: str, item: str, ts: int) -> Inbound:
    event = watch_event(event_id, user, item, ts)
    return Inbound("watch", 0, 0, user.encode(), orjson.dumps(event))


def forget(event_id: str, user: str, ts: int) -> Inbound:
    event = {"type": "forget", "event_id": event_id, "user_id": user, "ts": ts}
    return Inbound("forget", 0, 0, user.encode(), orjson.dumps(event))


def apply(states: StateTable, messages: list[Inbound], history_length: int = 10) -> Any:
    """One batch: the step over the table's states, then their persist (raises if it fails)."""
    result = step(messages, states.get, KINDS, history_length, 10)
    writes = {u: (t.partition, t.state) for u, t in result.touched.items() if t.changed}
    asyncio.run(states.persist(writes))
    return result


def state_of(*items: str) -> UserState:
    history = [
        Interaction(item, "watch", 1500.0, 1800.0, BASE_TS + n) for n, item in enumerate(items)
    ]
    return UserState(history, [f"e-{item}" for item in items])


def put(fake: FakeTable, user: str, state: UserState, partition: int = 0) -> None:
    """A record as Faust's recovery leaves it in the table."""
    fake.data[user.encode()] = encode(state)
    fake.data._key_partition[user.encode()] = partition


def test_get_decodes_a_user_once_and_hands_out_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    states, fake, _ = table()
    put(fake, "u1", state_of("a", "b"))
    decoded: list[bytes] = []

    def counting(raw: bytes) -> UserState:
        decoded.append(raw)
        return decode(raw)

    monkeypatch.setattr("streams.state.decode", counting)
    first = states.get("u1")
    assert first is not None
    first.history.clear()
    first.event_ids.append("changed in place")
    again = states.get("u1")
    assert again == state_of("a", "b")
    assert len(decoded) == 1
    assert states.get("nobody") is None


def test_a_batch_whose_persist_failed_leaves_the_cache_as_it_was() -> None:
    """Regression (issue 16): the batch step changes the states it reads in place, and
    a batch whose changelog write failed is redone (split in halves by
    prepare_isolating). Had the cache kept the failed batch's changes, the redo
    would have taken its events for duplicates and lost them."""
    for failure in (DeliveryError("broker down"), DeliveryError("too large", 10)):
        states, fake, producer = table()
        put(fake, "u1", state_of("a"))
        assert states.get("u1") is not None  # cached before the batch
        batch = [watch("e1", "u1", "b", BASE_TS + 10), watch("e2", "u2", "c", BASE_TS + 11)]
        producer.failure = failure
        with pytest.raises(RecordRefusedError if failure.too_large else TransientError):
            apply(states, batch)
        assert states.get("u1") == state_of("a")
        assert states.get("u2") is None

        producer.failure = None
        redo = apply(states, batch)
        assert redo.tallies.valid["watch"] == 2
        assert redo.tallies.duplicate["watch"] == 0
        u1 = states.get("u1")
        assert u1 is not None and [i.item_id for i in u1.history] == ["a", "b"]
        assert decode(fake.data[b"u1"]) == u1


def test_persist_sends_each_state_to_its_partition_then_caches_it() -> None:
    states, fake, producer = table()
    apply(states, [watch("e1", "u1", "a", BASE_TS)])
    [record] = producer.sent
    assert (record.topic, record.key, record.partition) == (TOPIC, b"u1", 0)
    assert record.value is fake.data[b"u1"]
    assert fake.data._key_partition[b"u1"] == 0
    assert states.cache_users == 1


def test_keys_of_revoked_partitions_leave_the_cache_and_are_never_served() -> None:
    states, fake, _ = table()
    put(fake, "u0", state_of("a"), partition=0)
    put(fake, "u1", state_of("b"), partition=1)
    assert states.get("u0") is not None and states.get("u1") is not None
    full = states.cache_bytes

    # Faust drops partition 1's keys from the store; before the recover
    # callback runs, a read already misses.
    fake.data.pop(b"u1")
    fake.data._key_partition.pop(b"u1")
    assert states.get("u1") is None
    put(fake, "u1", state_of("b"), partition=1)
    assert states.get("u1") is not None

    fake.rebalance({0})
    assert states.cache_users == 1
    assert 0 < states.cache_bytes < full
    assert states.get("u1") is None
    assert states.get("u0") == state_of("a")


def test_bytes_recovered_for_a_key_replace_its_cached_state() -> None:
    """A partition taken back after a rebalance is recovered from the changelog, which may
    hold a newer record than the one this worker cached when it last held it."""
    states, fake, _ = table()
    put(fake, "u1", state_of("a"))
    assert states.get("u1") == state_of("a")
    put(fake, "u1", state_of("a", "b"))
    assert states.get("u1") == state_of("a", "b")


def test_a_forget_marker_is_cached_and_its_tombstone_removes_it() -> None:
    states, fake, producer = table()
    apply(states, [watch("e1", "u1", "a", BASE_TS)])
    apply(states, [forget("f1", "u1", BASE_TS + 5)])
    marker = states.get("u1")
    assert marker is not None and marker.is_marker and marker.forgotten_at == BASE_TS + 5

    expired = states.expired_markers(BASE_TS + 6)
    assert expired == {"u1": (0, None)}
    asyncio.run(states.persist(expired))
    assert producer.sent[-1].value is None  # a tombstone
    assert states.get("u1") is None
    assert b"u1" not in fake.data and b"u1" not in fake.data._key_partition
    assert (states.cache_users, states.cache_bytes) == (0, 0)


def test_confidences_follow_each_batch_and_the_models_weighting() -> None:
    states, _, _ = table()
    w1, w2 = WeightingConfig(), WeightingConfig(watch_weight=2.0)
    items = ["a", "b", "c", "a", "d", "e", "b", "f", "g", "h", "i", "j", "a"]
    for n, item in enumerate(items):
        result = apply(states, [watch(f"e{n}", "u1", item, BASE_TS + n)], history_length=5)
        state = result.touched["u1"].state
        [got] = states.confidences(["u1"], [state], w1)
        assert list(got.items()) == list(user_confidences(state.history, w1).items())
    # A new model's weighting: recomputed, not carried over.
    [got] = states.confidences(["u1"], [state], w2)
    assert got == user_confidences(state.history, w2) != user_confidences(state.history, w1)
    # A state read again (an unchanged copy) gets the same confidences.
    copy = states.get("u1")
    assert copy is not None
    assert states.confidences(["u1"], [copy], w2) == [user_confidences(state.history, w2)]


def test_the_cache_keeps_the_most_recently_used_users_within_its_bound() -> None:
    states, fake, _ = table(capacity=2)
    for user in ("u1", "u2", "u3"):
        put(fake, user, state_of(user))
    states.get("u1")
    states.get("u2")
    states.get("u1")
    states.get("u3")  # evicts u2, the least recently used
    assert states.cache_users == 2
    assert states.get("u2") == state_of("u2")  # still read, from the table's bytes


def _deep_size(obj: Any, seen: set[int]) -> int:
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, list | tuple):
        size += sum(_deep_size(x, seen) for x in obj)
    elif isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, UserState):
        size += sum(
            _deep_size(getattr(obj, name), seen)
            for name in ("history", "event_ids", "seen_items", "forgotten_at")
        )
    return size


def test_the_memory_gauge_estimates_the_decoded_states_within_a_quarter() -> None:
    states, fake, _ = table()
    history = [
        Interaction(f"item-{n * 7919 % 5000}", "watch", 600.0 + n, 1800.0, BASE_TS + n)
        for n in range(100)
    ]
    state = UserState(history, [f"{n:032x}" for n in range(200)], [])
    put(fake, "u1", state)
    cached = states.get("u1")
    assert cached is not None
    [conf] = states.confidences(["u1"], [cached], WeightingConfig())
    seen = {id("watch"), id("rate")}  # the kinds are shared by every row
    actual = _deep_size(cached, seen) + _deep_size(conf, seen)  # conf's keys are the rows'
    assert len(conf) == 100
    assert states.cache_bytes == pytest.approx(actual, rel=0.25)
